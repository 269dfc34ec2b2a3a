// The libc calls Node has no API for, through koffi, for every layer that needs one: raw sockets
// (the transparent listeners, the DNS proxy's batched datagram I/O), namespaces and mounts (the
// datapath's netns, bpffs and cgroup2), interface indexes, the process's open-file limit (the
// agent raises it at start), giving freed heap memory back (after a flood, see
// proxy/overload/pressure-monitor.ts) and taking another process's sockets (an agent taking
// over from the one running, proxy/agent/handover.ts). libbpf's own calls are in redirect-bpf/libbpf.ts.
// Loaded on first use.

import { readFileSync } from 'node:fs'
import koffi from 'koffi'

type Fn = (...args: unknown[]) => unknown

export interface Libc {
  close: Fn
  open: Fn
  setns: Fn
  mount: Fn
  umount2: Fn
  if_nametoindex: Fn
  vsnprintf: Fn
  socket: Fn
  setsockopt: Fn
  bind: Fn
  listen: Fn
  getsockname: Fn
  /** Batched datagram I/O (proxy/dns/datagram-pump.ts): pointers into memory koffi allocated. */
  recvmmsg: Fn
  sendmmsg: Fn
  /** Variadic: `fcntl(fd, cmd, 'int', arg)`. */
  fcntl: Fn
  getrlimit: Fn
  setrlimit: Fn
  malloc_trim: Fn
  /** Variadic: `syscall(number, 'int', arg, ...)` (pidfd_open, pidfd_getfd). */
  syscall: Fn
}

let cached: Libc | undefined

export function libc(): Libc {
  if (cached) return cached
  const lib = koffi.load('libc.so.6')
  const f = (decl: string): Fn => lib.func(decl) as Fn
  cached = {
    close: f('int close(int fd)'),
    open: f('int open(const char *path, int flags)'),
    setns: f('int setns(int fd, int nstype)'),
    mount: f(
      'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)',
    ),
    umount2: f('int umount2(const char *target, int flags)'),
    if_nametoindex: f('unsigned int if_nametoindex(const char *name)'),
    vsnprintf: f('int vsnprintf(char *buf, size_t size, const char *fmt, void *ap)'),
    socket: f('int socket(int domain, int type, int protocol)'),
    setsockopt: f('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
    bind: f('int bind(int fd, const void *addr, uint32_t len)'),
    listen: f('int listen(int fd, int backlog)'),
    getsockname: f('int getsockname(int fd, void *addr, uint32_t *len)'),
    recvmmsg: f('int recvmmsg(int fd, uintptr_t vec, unsigned int vlen, int flags, uintptr_t timeout)'),
    sendmmsg: f('int sendmmsg(int fd, uintptr_t vec, unsigned int vlen, int flags)'),
    fcntl: f('int fcntl(int fd, int cmd, ...)'),
    getrlimit: f('int getrlimit(int resource, void *rlim)'),
    setrlimit: f('int setrlimit(int resource, const void *rlim)'),
    malloc_trim: f('int malloc_trim(size_t pad)'),
    syscall: f('long syscall(long number, ...)'),
  }
  return cached
}

/** A NUL-terminated C string in a Buffer that stays alive as long as the caller holds it. */
export function cString(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'utf8')
}

const RLIMIT_NOFILE = 7

export interface FileLimit {
  soft: number
  hard: number
}

/** The process's open-file limit (struct rlimit: two 64-bit counts). */
export function fileLimit(): FileLimit {
  const buf = Buffer.alloc(16)
  if ((libc().getrlimit(RLIMIT_NOFILE, buf) as number) !== 0)
    throw new Error(`getrlimit(RLIMIT_NOFILE): errno ${koffi.errno()}`)
  return { soft: Number(buf.readBigUInt64LE(0)), hard: Number(buf.readBigUInt64LE(8)) }
}

/** Sets the open-file limit; false if the system refused (a hard limit above ours needs CAP_SYS_RESOURCE). */
export function setFileLimit(limit: FileLimit): boolean {
  const buf = Buffer.alloc(16)
  buf.writeBigUInt64LE(BigInt(limit.soft), 0)
  buf.writeBigUInt64LE(BigInt(limit.hard), 8)
  return (libc().setrlimit(RLIMIT_NOFILE, buf) as number) === 0
}

/** The most open files the kernel lets any process have (fs.nr_open). */
export function systemFileCeiling(): number {
  return Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim())
}

/** Has malloc give its free memory back to the system; whether any was. */
export function releaseFreeMemory(): boolean {
  return (libc().malloc_trim(0) as number) === 1
}

// x86_64 and aarch64 share these numbers (the generic syscall table).
const SYS_PIDFD_OPEN = 434
const SYS_PIDFD_GETFD = 438

/**
 * Copies of another process's file descriptors, as pidfd_getfd(2) makes them (Linux 5.6; needs
 * ptrace rights over it: root, or the same user without Yama's restrictions). The sockets are the
 * same kernel objects: a listener keeps its queue, whichever process accepts.
 */
export function takeFds(pid: number, fds: readonly number[]): number[] {
  const c = libc()
  const pidfd = c.syscall(SYS_PIDFD_OPEN, 'int', pid, 'unsigned int', 0) as number
  if (pidfd < 0) throw new Error(`pidfd_open(${pid}): errno ${koffi.errno()}`)
  const taken: number[] = []
  try {
    for (const fd of fds) {
      const copy = c.syscall(SYS_PIDFD_GETFD, 'int', pidfd, 'int', fd, 'unsigned int', 0) as number
      if (copy < 0) throw new Error(`pidfd_getfd(${pid}, ${fd}): errno ${koffi.errno()}`)
      taken.push(copy)
    }
    return taken
  } catch (e) {
    for (const fd of taken) c.close(fd)
    throw e
  } finally {
    c.close(pidfd)
  }
}
