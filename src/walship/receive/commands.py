"""`walship wal-receive`: the settings and flags into a Receiver, run until stopped."""

from __future__ import annotations

import signal

from walship.errors import ConfigError


def run(command: str, args, settings, store_factory) -> int:
    spool_dir = args.spool or settings.receive_spool_dir
    if not spool_dir:
        raise ConfigError("wal-receive needs a spool directory for WAL not yet stored",
                          "pass --spool DIR (or set receive_spool_dir) on a local file system")
    synchronous = settings.receive_synchronous if args.synchronous is None else args.synchronous
    interval = settings.receive_upload_interval if args.upload_interval is None else args.upload_interval
    if not 0 < interval <= 3600:
        raise ConfigError(f"--upload-interval {interval} is out of range", "give 0 < seconds <= 3600")
    from walship.receive.receiver import Receiver
    receiver = Receiver(settings, store_factory(), conninfo=args.pg, slot=args.slot or settings.receive_slot,
                        spool_dir=spool_dir, synchronous=synchronous, upload_interval_s=interval,
                        spool_max_bytes=settings.receive_spool_max_size,
                        application_name=args.application_name or settings.receive_application_name)

    def stop(_signum: int, _frame) -> None:
        # leave the loop after the current batch: what was received is durable or will be re-sent by the slot
        receiver.stop = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return receiver.run()
