"""A test-only FUSE file system that simulates power cuts: writes not made durable are lost.

Killing a process with SIGKILL loses nothing the kernel already holds, so a
missing fsync can never fail a kill -9 test. This layer (modelled on LazyFS,
dsrhaslab/lazyfs, which keeps unsynced data in its own page cache and drops it
on command) is a passthrough over a backing directory that remembers what is
not yet durable and, on a cut, throws exactly that away, as a disk with a
volatile write cache would. Unlike LazyFS, which applies renames and unlinks
to its backing file system at once, directory entries here are durable only
after an fsync of their directory, the strict POSIX reading (ext4 usually
commits them sooner, with its journal; other file systems may not).

What survives a cut:
- a file's data as of its last fsync/fdatasync (through any descriptor);
  writes since are lost, appends after a synced prefix lose only the tail, a
  truncate or overwrite since goes back to the synced bytes; close() syncs
  nothing; a file never synced is empty;
- a directory's entries (create, mkdir, symlink, link, unlink, rmdir, rename
  in or out) as of its last fsync (os.open(dir, O_RDONLY) + os.fsync); a new
  directory has none until then, and needs its own entry in its parent synced;
  a rename across directories needs both synced (only the new one: two names);
- metadata (mode, owner, times) as it is: not modelled.
With journal=True the layer behaves like ext4's journal instead: any fsync or
fsyncdir also commits every directory-entry change made before it, anywhere
(data stays per file: an unsynced file renamed into place is still empty).
syncfs(2)/sync(2) never reach a FUSE server (the kernel forwards syncfs only
to virtiofs), so the layer cannot see them: `PowerCutFS.sync()` is the way
to make everything durable from a test (for example after preparing files).

API (tests.powercut):
    fuse_unavailable() -> str | None    why not here (not root, no /dev/fuse, no fusermount3/libfuse3)
    fs = PowerCutFS(backing_dir, mountpoint, journal=False)
    fs.mount()        everything in backing_dir counts as durable from now on
    fs.sync()         everything written so far becomes durable
    fs.cut()          power cut: backing_dir keeps exactly what survived, the mount is gone
                      (a process still using it gets EIO, then ENOTCONN); returns a CutReport
    fs.kill_and_cut(*procs)   SIGKILL Popen objects or pids, then cut, then reap them
    power_cut([fs1, fs2], procs)   one cut across several mounts (frozen together, then cut)
    fs.unmount()      clean shutdown: backing_dir keeps everything, durable or not
    with PowerCutFS(...) as fs: ...     mount/unmount
After a cut, "reboot" with fs.mount() again (or read backing_dir directly).

The server runs in its own process (python -m tests.powercut.server) on
mfusepy over libfuse3, single-threaded; state (shadow copies of overwritten
synced data, inodes a durable name still needs) lives beside the backing
directory in .NAME.powercut, so the backing directory must be an ordinary
directory of a file system with hard links. Needs root and /dev/fuse;
scripts/setup.sh --dev installs fuse3, libfuse3 and mfusepy.
"""

from tests.powercut.layer import PowerCutFS, fuse_unavailable, power_cut
from tests.powercut.restore import CutReport

__all__ = ["CutReport", "PowerCutFS", "fuse_unavailable", "power_cut"]
