"""The WAL page-header parser on real segments of every supported PostgreSQL."""

from __future__ import annotations

import pytest

from walship.errors import IntegrityError
from walship.pg import walheader
from walship.pg.walnames import Segment


def test_the_header_of_a_real_segment_names_its_version_cluster_and_place(pg_version, cluster_factory):
    cluster = cluster_factory(pg_version)
    cluster.initdb(wal_segsize=4)
    cluster.start()
    cluster.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    name = cluster.switch_wal()
    sysid = cluster.scalar("SELECT system_identifier::text FROM pg_control_system()")
    size = cluster.scalar("SELECT pg_size_bytes(current_setting('wal_segment_size'))")
    data = (cluster.datadir / "pg_wal" / name).read_bytes()
    cluster.stop()

    header = walheader.parse_segment_header(data, name)
    assert header.pg_major == pg_version
    assert header.system_identifier == sysid
    assert header.segment_size == size == 4 << 20
    segment = Segment.parse(name, size)
    assert header.page_address == segment.start_lsn(size)
    walheader.check_segment(data, name, size=size, start_lsn=segment.start_lsn(size), timeline=1,
                            system_identifier=sysid)
    assert walheader.read_control_identity(str(cluster.datadir))[0] == sysid
    assert walheader.read_pg_major(str(cluster.datadir)) == pg_version

    later = segment.next(3)
    with pytest.raises(IntegrityError, match="recycled or renamed"):
        walheader.check_segment(data, later.name(size), size=size, start_lsn=later.start_lsn(size), timeline=1,
                                system_identifier=sysid)
    with pytest.raises(IntegrityError, match="belongs to the cluster"):
        walheader.check_segment(data, name, size=size, start_lsn=segment.start_lsn(size), timeline=1,
                                system_identifier="1")
