# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""Progress lines of long work (an index build, a restore test), in one format.

A module cannot print while it runs: Ansible shows its result when it returns. So long work
runs as an async job that appends one line per poll to a progress file
(:class:`ProgressFile`), and the action ``ndis.dbops.progress_wait`` polls the job, reads
the file and prints each new line at default verbosity, as it comes. The same lines go to
stderr when a CLI (dbops-dump) runs in a terminal.

    index embeddings_embedding_hnsw_cosine: building index: loading tuples, 45% (4500/10000), 12.3 s
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time


def format_line(what, phase, done=None, total=None, elapsed=0.0):
    """``what: phase, NN% (done/total), S s``; the share is left out when total is unknown."""
    parts = ["%s: %s" % (what, phase)]
    if total:
        share = min(100, int(100.0 * float(done or 0) / float(total)))
        parts.append("%d%% (%s/%s)" % (share, _count(done or 0), _count(total)))
    parts.append("%.1f s" % float(elapsed))
    return ", ".join(parts)


def _count(n):
    return str(int(n))


class ProgressFile(object):
    """Appends progress lines to a file (flushed at once); a no-op without a path."""

    def __init__(self, path, also=None, fresh=True):
        self.path = path
        self.also = also  # another callable taking the line (e.g. a print to stderr)
        self.started = time.monotonic()
        if path and fresh:
            open(path, "w").close()  # a fresh file per job; fresh=False: a later step of the same job appends

    def elapsed(self):
        return time.monotonic() - self.started

    def line(self, what, phase, done=None, total=None):
        text = format_line(what, phase, done, total, self.elapsed())
        if self.path:
            with open(self.path, "a") as f:
                f.write(text + "\n")
        if self.also:
            self.also(text)
        return text


class Ticker(object):
    """Calls ``poll()`` every ``interval`` seconds in a thread while a blocking call runs.

    ``poll`` returns (phase, done, total) or None (nothing to say this time); each answer
    becomes a progress line. Errors inside ``poll`` end the ticking, never the work.

        with Ticker(progress, "index x", poll, 5):
            cur.execute(create_index)
    """

    def __init__(self, progress, what, poll, interval=5.0):
        self.progress, self.what, self.poll, self.interval = progress, what, poll, float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-ticker")
        self._thread.daemon = True

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                answer = self.poll()
            except Exception:  # a failed progress read must not fail the work it watches
                return
            if answer:
                self.progress.line(self.what, *answer)

    def __enter__(self):
        if self.progress.path or self.progress.also:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 5)
        return False


def index_build_poll(connect, pid):
    """A Ticker poll() for a CREATE INDEX running in backend ``pid``: its phase and tuples (or
    blocks) done, from pg_stat_progress_create_index, read on a connection of its own
    (``connect()`` opens it; ``poll.close()`` closes it)."""
    watch = connect()
    watch.autocommit = True

    def poll():
        cur = watch.cursor()
        cur.execute("SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total"
                    " FROM pg_stat_progress_create_index WHERE pid = %s", (pid,))
        row = cur.fetchone()
        if row is None:
            return ("waiting to start", None, None)
        phase, tuples_done, tuples_total, blocks_done, blocks_total = row
        if tuples_total:
            return (phase, tuples_done, tuples_total)
        return (phase, blocks_done, blocks_total or None)

    poll.close = watch.close
    return poll
