"""wal-receive: stream WAL from the primary into the repository, acknowledging only durable WAL.

The loop, one thread:
1. read what the primary sent (pg/replication.py) and write it into the spool file of its segment
   (`<spool>/<segment>.partial`, written at its offset);
2. fsync it; the position is now durable locally;
3. --synchronous: store what arrived since the last store as one small piece (receive/partial.py), then
   report the position as flushed: a commit waiting on synchronous_standby_names = 'walship' returns only
   once its WAL is in the repository. Asynchronous: report the position at once and store a piece every
   `receive_upload_interval` seconds;
4. a complete segment is renamed `<spool>/<segment>`, stored as wal/<segment> through wal-push's own
   push_file (the same checks, the same create-only rule: archive_command storing it too is no conflict),
   its pieces deleted, and its spool file removed.

Restart (after kill -9 or a crash): the spool's newest .partial is where receiving resumes, from the slot's
restart_lsn when that is inside it (the primary still holds everything after what was reported flushed);
pieces already stored are not stored again (the listing of receive/<segment>/ says how far they go);
complete segments left in the spool are stored first.

The repository unreachable: WAL keeps arriving into the spool up to `receive_spool_max_size`, then
wal-receive stops reading (the slot keeps the WAL on the primary) and says so; synchronous commits wait,
which is the point of synchronous mode (docs/operations.md says how to degrade to asynchronous).
"""

from __future__ import annotations

import hashlib
import os
import time

from walship import codec, logs, pipeline
from walship.errors import IntegrityError, PostgresError, StoreError, WalshipError
from walship.pg.walnames import Segment, format_lsn, parse_history, segment_of
from walship.receive import partial
from walship.repo import layout
from walship.repo import record as repo_record
from walship.storage import ObjectExists, Store

RECONNECT_DELAY_S = 2.0
READ_WAIT_S = 1.0
STATUS_FILE = "walship-receive.status.json"
FEEDBACK_INTERVAL_S = 10.0  # unchanged position: a keepalive well inside wal_sender_timeout (60 s)
STATUS_INTERVAL_S = 1.0     # the status file and the metrics, not the feedback (reported at once)


class SpoolFull(WalshipError):
    pass


class Receiver:
    def __init__(self, settings, store: Store, *, conninfo: str | None, slot: str, spool_dir: str,
                 synchronous: bool, upload_interval_s: float, spool_max_bytes: int,
                 application_name: str, once_until_lsn: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.conninfo = conninfo
        self.slot = slot
        self.spool_dir = os.path.abspath(spool_dir)
        self.synchronous = synchronous
        self.upload_interval_s = upload_interval_s
        self.spool_max_bytes = spool_max_bytes
        self.application_name = application_name
        from walship.crypto import keyring_for_writing
        self.keyring = keyring_for_writing(settings)
        level = settings.compression_level
        self.level = codec.WAL_LEVELS[settings.compression] if level is None else level
        self.owner: repo_record.RepositoryRecord | None = None
        self.segment_size = 0
        self.timeline = 0
        # the segment being received: its name, spool file descriptor, how far it is written, fsynced, stored
        self.current: Segment | None = None
        self.fd = -1
        self.written = 0
        self.durable = 0
        self.stored = 0
        self.last_store = time.monotonic()
        self.last_store_wall: float | None = None
        self.server_end = 0
        self.connected = False
        self.spool_full_said = False
        self.stop = False
        # the last failures, for the passive result: connecting (cleared when streaming), storing (cleared
        # by the next store)
        self.session_error: str | None = None
        self.store_error: str | None = None
        from walship.receive.report import Reporter
        self.reporter = Reporter(settings)

    # --- positions --------------------------------------------------------------------------------
    def _segment_start(self) -> int:
        assert self.current is not None
        return self.current.start_lsn(self.segment_size)

    def acknowledged_lsn(self) -> int:
        """What may be reported flushed: durable in the spool, and in the repository too when synchronous
        (then never past a complete segment still waiting in the spool for the repository)."""
        if self.current is None:
            return 0
        if not self.synchronous:
            return self._segment_start() + self.durable
        waiting = self._complete_in_spool()
        if waiting:
            return Segment.parse(waiting[0], self.segment_size).start_lsn(self.segment_size)
        return self._segment_start() + self.stored

    # --- spool --------------------------------------------------------------------------------------
    def _spool_path(self, segment: Segment, complete: bool) -> str:
        name = segment.name(self.segment_size)
        return os.path.join(self.spool_dir, name if complete else name + ".partial")

    def _open_segment(self, segment: Segment, offset: int) -> None:
        """Make `segment` the current one, its spool file holding [0, offset) (truncated there)."""
        self._close_segment()
        path = self._spool_path(segment, complete=False)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, offset)
        os.fsync(fd)
        _fsync_dir(self.spool_dir)
        self.current, self.fd, self.written, self.durable = segment, fd, offset, offset
        found = partial.pieces(self.store, segment.name(self.segment_size))
        self.stored = min(partial.contiguous_end(found), offset) if found else 0
        self.last_store = time.monotonic()

    def _close_segment(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.current = None

    def _spool_bytes(self) -> int:
        total = 0
        for entry in os.scandir(self.spool_dir):
            if entry.is_file():
                total += entry.stat().st_size
        return total

    def _complete_in_spool(self) -> list[str]:
        from walship.pg.walnames import is_segment
        return sorted(e for e in os.listdir(self.spool_dir) if is_segment(e))

    def _partial_in_spool(self) -> list[str]:
        from walship.pg.walnames import is_partial
        return sorted(e for e in os.listdir(self.spool_dir) if is_partial(e))

    # --- repository -------------------------------------------------------------------------------
    def _store_piece(self) -> None:
        """Store [stored, durable) of the current segment as one piece."""
        if self.current is None or self.durable <= self.stored:
            return
        name = self.current.name(self.segment_size)
        data = os.pread(self.fd, self.durable - self.stored, self.stored)
        if self.stored == 0:
            # the piece at offset 0 carries the long page header: the same checks as any stored segment
            _check_first_page(data, name, self.owner, self.segment_size, self.settings.allow_untested_pg)
        key = layout.received_piece_key(name, self.stored, self.durable)
        blob = pipeline.pack(data, self.settings.compression, self.level, self.keyring,
                          sha256=hashlib.sha256(data).hexdigest(), name=name)
        try:
            self.store.put(key, blob, if_absent=True)
        except ObjectExists:
            # stored before a crash that came before its acknowledgement: the same bytes, or a split brain
            if pipeline.unpack(self.store.get(key), key, self.keyring) != data:
                raise IntegrityError(f"{key} is already stored in {self.store.url} with different content",
                                     "another cluster may be streaming into this repository (split brain); "
                                     "give each cluster its own repository") from None
        self.stored = self.durable
        self.last_store = time.monotonic()
        self.last_store_wall = time.time()
        self.store_error = None

    def _store_complete(self, path: str) -> None:
        """Store a complete segment from the spool as wal/<name> (wal-push's push_file), then clean up."""
        from walship.archive.push import push_file
        name = os.path.basename(path)
        result, _st = push_file(self.store, path, self.settings.compression, self.level, self.keyring,
                                self.owner, self.settings.allow_untested_pg)
        logs.info("wal_received", f"{name} stored" + (" (already archived, identical)" if result.already_archived
                                                       else ""), segment=name, bytes=result.bytes)
        self.store.delete([key for _s, _e, key in partial.pieces(self.store, name)])
        os.unlink(path)
        _fsync_dir(self.spool_dir)
        self.last_store_wall = time.time()
        self.store_error = None

    def _store_backlog(self) -> bool:
        """Store the complete segments waiting in the spool, oldest first; False when the repository failed."""
        for name in self._complete_in_spool():
            try:
                self._store_complete(os.path.join(self.spool_dir, name))
            except StoreError as exc:
                logs.warning("receive_store_failed", f"{name} stays in the spool: {exc.one_line()}",
                             segment=name, error=exc.one_line())
                self.store_error = exc.one_line()
                return False
        return True

    def _try_store_piece(self) -> bool:
        try:
            self._store_piece()
            return True
        except StoreError as exc:
            logs.warning("receive_store_failed", f"WAL stays in the spool: {exc.one_line()}", error=exc.one_line())
            self.store_error = exc.one_line()
            return False

    # --- the stream -------------------------------------------------------------------------------
    def _write(self, lsn: int, data: bytes) -> None:
        """Write WAL starting at lsn into the spool, segment by segment."""
        while data:
            if self.current is None or lsn != self._segment_start() + self.written:
                segment = segment_of(lsn, self.timeline, self.segment_size)
                if self.current != segment:
                    if self.current is not None:
                        raise PostgresError(f"the primary sent WAL at {format_lsn(lsn)}, expected "
                                            f"{format_lsn(self._segment_start() + self.written)}",
                                            "wal-receive reconnects and resumes from its spool")
                    self._open_segment(segment, lsn - segment.start_lsn(self.segment_size))
                else:
                    raise PostgresError(f"the primary sent WAL at {format_lsn(lsn)}, expected "
                                        f"{format_lsn(self._segment_start() + self.written)}",
                                        "wal-receive reconnects and resumes from its spool")
            room = self.segment_size - self.written
            part, data = data[:room], data[room:]
            self._pwrite_all(part)
            self.written += len(part)
            lsn += len(part)
            if self.written == self.segment_size:
                self._finish_segment()

    def _pwrite_all(self, part: bytes) -> None:
        """Write part at self.written, all of it: a short write (a disk filling up) must not be counted as
        written, or the next write would leave a hole of zeros that is then acknowledged as WAL."""
        done = 0
        try:
            while done < len(part):
                done += os.pwrite(self.fd, memoryview(part)[done:], self.written + done)
        except OSError as exc:
            # what was written of this part stays beyond self.written: the next session truncates it away
            raise SpoolFull(f"cannot write the spool {self.spool_dir}: {exc.strerror}",
                            "free space there (nothing was acknowledged beyond what is stored); "
                            "wal-receive goes on from where it was") from None

    def _make_durable(self) -> None:
        if self.current is not None and self.written > self.durable:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise SpoolFull(f"cannot fsync the spool {self.spool_dir}: {exc.strerror}",
                                "free space there; wal-receive goes on from where it was") from None
            self.durable = self.written

    def _finish_segment(self) -> None:
        """The current segment is complete: durable under its own name, then stored whole."""
        assert self.current is not None
        segment = self.current
        os.fsync(self.fd)
        self.durable = self.written
        done = self._spool_path(segment, complete=True)
        os.rename(self._spool_path(segment, complete=False), done)
        _fsync_dir(self.spool_dir)
        self._close_segment()
        self._store_backlog()
        next_segment = segment.next()
        self._open_segment(next_segment, 0)

    def _resume_position(self, stream, restart_lsn: int | None) -> int:
        """Where to start streaming: the end of the spool's newest partial (or the slot's restart_lsn inside
        it), else the start of the slot's restart segment."""
        partials = self._partial_in_spool()
        for stale in partials[:-1]:
            os.unlink(os.path.join(self.spool_dir, stale))   # an older timeline's partial, stored already
        if partials:
            name = partials[-1][:24]
            segment = Segment.parse(name, self.segment_size)
            start = segment.start_lsn(self.segment_size)
            end = start + os.path.getsize(os.path.join(self.spool_dir, partials[-1]))
            if segment.timeline != self.timeline:
                return self._switch_timeline(stream, segment, end)
            position = restart_lsn if restart_lsn is not None and start <= restart_lsn <= end else end
            self.timeline = segment.timeline
            return position
        if restart_lsn is None:
            raise PostgresError(f"the slot {self.slot} holds no WAL position",
                                f"drop it (SELECT pg_drop_replication_slot('{self.slot}')) and start "
                                "wal-receive again: it creates the slot with RESERVE_WAL")
        return segment_of(restart_lsn, self.timeline, self.segment_size).start_lsn(self.segment_size)

    def _switch_timeline(self, stream, old: Segment, old_end: int) -> int:
        """The server is on a newer timeline than the spool: store the history files, keep the old timeline's
        WAL up to the switch point as wal/<segment>.partial, and go on on the new timeline from there."""
        switch = None
        for timeline in range(old.timeline + 1, self.timeline + 1):
            name, content = stream.timeline_history(timeline)
            self._store_history(name, content)
            for parent, lsn, _reason in parse_history(content.decode("utf-8", "replace")):
                if parent == old.timeline:
                    switch = lsn
        if switch is None or switch > old_end:
            raise IntegrityError(
                f"the server's timeline {self.timeline} does not branch from timeline {old.timeline} at or "
                f"before {format_lsn(old_end)}, where this spool ends",
                "the server is not the one this spool followed (or it diverged); point wal-receive at the "
                "right server, or move the spool aside and start with an empty one")
        old_path = os.path.join(self.spool_dir, old.name(self.segment_size) + ".partial")
        old_start = old.start_lsn(self.segment_size)
        with open(old_path, "rb") as fh:
            kept = fh.read(switch - old_start)
        # the old timeline's last segment, as PostgreSQL archives it at promotion (same name, same bytes)
        from walship.archive.push import push_file
        keep_path = old_path + ".tmp"
        with open(keep_path, "wb") as fh:
            fh.write(kept + bytes(self.segment_size - len(kept)))
            fh.flush()
            os.fsync(fh.fileno())
        final = os.path.join(self.spool_dir, "tli-switch", old.name(self.segment_size) + ".partial")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(keep_path, final)
        try:
            push_file(self.store, final, self.settings.compression, self.level, self.keyring, self.owner)
        except IntegrityError as exc:
            # the promoted server's archiver may have stored its own .partial of that segment first
            logs.warning("receive_partial_kept", f"{exc.one_line()}; the received copy stays in {final}")
        else:
            os.unlink(final)
        self.store.delete([k for _s, _e, k in partial.pieces(self.store, old.name(self.segment_size))])
        # the new timeline's segment holding the switch point starts with the same bytes
        new_segment = segment_of(switch, self.timeline, self.segment_size)
        new_path = self._spool_path(new_segment, complete=False)
        offset = switch - new_segment.start_lsn(self.segment_size)
        with open(new_path, "wb") as fh:
            fh.write(kept[len(kept) - offset:] if offset else b"")
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(old_path)
        _fsync_dir(self.spool_dir)
        logs.info("receive_timeline", f"following timeline {self.timeline} from {format_lsn(switch)}",
                  timeline=self.timeline, lsn=format_lsn(switch))
        return switch

    def _store_history(self, name: str, content: bytes) -> None:
        from walship.repo.layout import wal_key
        blob = pipeline.pack(content, self.settings.compression, self.level, self.keyring,
                          sha256=hashlib.sha256(content).hexdigest(), name=name)
        try:
            self.store.put(wal_key(name), blob, if_absent=True)
        except ObjectExists:
            if pipeline.unpack(self.store.get(wal_key(name)), name, self.keyring) != content:
                raise IntegrityError(f"{name} is stored in {self.store.url} with different content",
                                     "another cluster may write into this repository (split brain)") from None
        logs.info("wal_received", f"{name} stored", segment=name)

    def _session(self) -> None:
        """One replication connection, from connecting to its end."""
        from walship.pg.replication import ReplicationStream
        stream = ReplicationStream(self.conninfo, self.application_name)
        try:
            system_identifier, self.timeline, self.server_end = stream.identify()
            self.segment_size = stream.segment_size()
            identity = repo_record.ClusterIdentity(system_identifier, stream.server_version // 10000,
                                                   self.segment_size)
            self.owner = repo_record.claim(self.store, identity, "wal-receive")
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            exists, restart_lsn = stream.slot_restart_lsn(self.slot)
            if not exists:
                stream.create_slot(self.slot)
                logs.info("receive_slot", f"created the physical replication slot {self.slot}", slot=self.slot)
                exists, restart_lsn = stream.slot_restart_lsn(self.slot)
            self._store_backlog()
            start = self._resume_position(stream, restart_lsn)
            self._close_segment()
            segment = segment_of(start, self.timeline, self.segment_size)
            self._open_segment(segment, start - segment.start_lsn(self.segment_size))
            stream.start(self.slot, start, self.timeline)
            self.connected = True
            self.session_error = None
            logs.info("receive_started", f"receiving timeline {self.timeline} from {format_lsn(start)} "
                      f"(slot {self.slot}, {'synchronous' if self.synchronous else 'asynchronous'})",
                      lsn=format_lsn(start), timeline=self.timeline, slot=self.slot)
            _notify_ready()
            self._stream(stream)
        finally:
            self.connected = False
            stream.close()
            # the primary gone or restarting: what the spool holds goes into the repository now, not at
            # the next connection (which may never come)
            if self.current is not None:
                try:
                    self._make_durable()
                    self._try_store_piece()
                except WalshipError as exc:
                    logs.warning("receive_store_failed", f"WAL stays in the spool: {exc.one_line()}",
                                 error=exc.one_line())
            self._close_segment()
            if os.path.isdir(self.spool_dir):
                self._write_status()         # connected: false, for the metrics

    def _stream(self, stream) -> None:
        reported = -1
        last_status = last_feedback = 0.0
        while not self.stop:
            spool_full = self._spool_bytes() > self.spool_max_bytes
            if spool_full:
                if not self.spool_full_said:
                    logs.error("receive_spool_full",
                               f"the spool {self.spool_dir} holds more than {self.spool_max_bytes} bytes not stored "
                               "in the repository: receiving stops until the repository takes them (the slot "
                               "keeps the WAL on the primary)")
                    self.spool_full_said = True
                time.sleep(READ_WAIT_S)
                message = None
            else:
                self.spool_full_said = False
                message = stream.read(READ_WAIT_S)
            # take everything that already arrived before making it durable: one fsync and one piece per batch
            while message is not None:
                lsn, data = message
                self._write(lsn, data)
                self.server_end = max(self.server_end, stream.wal_end())
                if self.written - self.durable >= (1 << 20):
                    break
                message = stream.read(0)
            self._make_durable()
            due = time.monotonic() - self.last_store >= self.upload_interval_s
            if self.synchronous or due or spool_full:
                if self._store_backlog():
                    self._try_store_piece()
                self.last_store = time.monotonic()
            # never backwards: what was reported was stored (a waiting segment's pieces were, up to there)
            position = max(self.acknowledged_lsn(), reported)
            now = time.monotonic()
            if position != reported or now - last_feedback >= FEEDBACK_INTERVAL_S:
                stream.feedback(position)
                reported, last_feedback = position, now
            if now - last_status >= STATUS_INTERVAL_S:
                last_status = now
                self._write_status()

    def _write_status(self) -> None:
        """The figures `walship check receive` and status read (a small file in the spool, replaced whole)."""
        import json
        doc = {"pid": os.getpid(), "connected": self.connected, "timeline": self.timeline,
               "received_lsn": format_lsn(self._segment_start() + self.durable) if self.current else None,
               "acknowledged_lsn": format_lsn(self.acknowledged_lsn()) if self.current else None,
               "server_lsn": format_lsn(self.server_end), "last_store": self.last_store_wall,
               "updated": time.time(), "synchronous": self.synchronous, "slot": self.slot}
        tmp = os.path.join(self.spool_dir, STATUS_FILE + ".tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, os.path.join(self.spool_dir, STATUS_FILE))
        except OSError as exc:
            # a full spool disk: the figures wait, receiving does not (it says so itself when it must stop)
            logs.warning("receive_status_failed", f"cannot write {tmp}: {exc.strerror}")
        if self.settings.metrics_file:
            from walship.reporting import metrics
            values = {"walship_receive_connected": 1.0 if self.connected else 0.0,
                      "walship_receive_lag_bytes": float(max(0, self.server_end - self.acknowledged_lsn()))}
            if self.last_store_wall is not None:
                values["walship_receive_last_store_timestamp_seconds"] = self.last_store_wall
            try:
                metrics.update(self.settings.metrics_file, values)
            except OSError as exc:
                logs.warning("metrics_failed", f"cannot write {self.settings.metrics_file}: {exc.strerror}")
        if self.connected:
            self._report(spool_full=self.spool_full_said)

    def _report(self, spool_full: bool) -> None:
        """The passive result, when one is due (receive/report.py sends it on its own thread)."""
        if not self.reporter.enabled:
            return
        from walship.receive.report import ReceiveState
        try:
            spool_bytes = self._spool_bytes()
        except OSError:
            spool_bytes = 0
        age = None if self.last_store_wall is None else max(0.0, time.time() - self.last_store_wall)
        lag = max(0, self.server_end - self.acknowledged_lsn()) if self.current is not None else 0
        self.reporter.offer(ReceiveState(
            connected=self.connected, synchronous=self.synchronous, lag_bytes=lag, last_store_age_s=age,
            spool_bytes=spool_bytes, spool_full=spool_full,
            error=self.store_error if self.connected else self.session_error))

    def run(self) -> int:
        """Receive until stopped; reconnects after a lost connection, fails on what needs the operator."""
        from walship.pg.replication import SlotUnusable
        while not self.stop:
            try:
                self._session()
            except (SlotUnusable, IntegrityError):
                raise
            except (PostgresError, StoreError, SpoolFull) as exc:
                logs.warning("receive_disconnected", f"{exc.one_line()}; retrying in {RECONNECT_DELAY_S:.0f} s",
                             error=exc.one_line())
                self.session_error = exc.one_line()
                self._report(spool_full=isinstance(exc, SpoolFull))
                time.sleep(RECONNECT_DELAY_S)
        return 0


def _check_first_page(data: bytes, name: str, owner, segment_size: int, allow_untested: bool) -> None:
    from walship.pg import walheader
    segment = Segment.parse(name, segment_size)
    head = data[:walheader.LONG_HEADER_SIZE]
    # check_segment takes a whole segment: the header is all it reads, the rest is zeros here
    walheader.check_segment(head + bytes(segment_size - len(head)), name, size=segment_size,
                            start_lsn=segment.start_lsn(segment_size), timeline=segment.timeline,
                            system_identifier=owner.system_identifier if owner else None,
                            allow_unknown_format=allow_untested)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _notify_ready() -> None:
    """systemd Type=notify: READY=1 once the stream runs (nothing to do outside systemd)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    import socket
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"READY=1", address)
        except OSError:
            pass
