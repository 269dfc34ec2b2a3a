// cgroup2 for the sockmap mode: sock_ops programs attach to a cgroup2 directory and see the
// sockets of the processes in it. The machine's /sys/fs/cgroup is cgroup v1 with cgroup2 at
// /sys/fs/cgroup/unified; where there is none, l7proxy mounts its own.

import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import koffi from 'koffi'
import { cString, libc } from '../lib/libc.js'
import { BpfError, check, errnoName, libbpf } from './libbpf.js'

const BPF_CGROUP_SOCK_OPS = 3
const BPF_SK_MSG_VERDICT = 7
const O_RDONLY_DIRECTORY_CLOEXEC = 0o2000000 | 0o200000

function cgroup2Mounts(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1]!)
}

const OWN_ROOT = '/run/l7proxy/cgroup2'

/** A cgroup2 mount point: an existing one, or one l7proxy mounts under /run/l7proxy. */
export function cgroup2Root(): string {
  const existing = cgroup2Mounts()
  if (existing.length > 0) return existing.includes('/sys/fs/cgroup/unified') ? '/sys/fs/cgroup/unified' : existing[0]!
  const dir = OWN_ROOT
  mkdirSync(dir, { recursive: true })
  if ((libc().mount(cString('none'), cString(dir), cString('cgroup2'), 0, null) as number) !== 0) {
    throw new BpfError('EMOUNT', `cannot mount cgroup2 at ${dir}: ${errnoName(koffi.errno())}`)
  }
  return dir
}

function openDir(dir: string): number {
  const fd = libc().open(cString(dir), O_RDONLY_DIRECTORY_CLOEXEC) as number
  if (fd < 0) throw new BpfError('EATTACH', `cannot open cgroup ${dir}: ${errnoName(koffi.errno())}`)
  return fd
}

/** The group `name`, made unless it exists; `made`: this call made it (its maker removes it). */
export function createCgroup(name: string): { dir: string; made: boolean } {
  const dir = join(cgroup2Root(), name)
  const made = !existsSync(dir)
  mkdirSync(dir, { recursive: true })
  return { dir, made }
}

/** Moves a process (and its future children) into a cgroup. */
export function joinCgroup(dir: string, pid: number = process.pid): void {
  writeFileSync(join(dir, 'cgroup.procs'), `${pid}\n`)
}

/** Moves every process of `dir` back to the root and removes it, and the root if l7proxy mounted it. */
export function removeCgroup(dir: string): void {
  const root = cgroup2Root()
  try {
    for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean))
      joinCgroup(root, Number(pid))
    rmdirSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  releaseCgroup2Root()
}

/**
 * Unmounts the cgroup2 mount l7proxy made (where this mount namespace had none, as under
 * `ip netns exec`, which remounts /sys) and removes its directory. Other groups may still use
 * it (it is this mount namespace's view of the one hierarchy): a busy unmount fails and leaves it.
 */
export function releaseCgroup2Root(): void {
  if (!cgroup2Mounts().includes(OWN_ROOT)) return
  if ((libc().umount2(cString(OWN_ROOT), 0) as number) === 0) rmdirSync(OWN_ROOT)
}

export function attachSockops(progFd: number, cgroupDir: string): void {
  const fd = openDir(cgroupDir)
  try {
    check(
      libbpf().bpf_prog_attach(progFd, fd, BPF_CGROUP_SOCK_OPS, 0) as number,
      'EATTACH',
      `attaching sock_ops to ${cgroupDir}`,
    )
  } finally {
    libc().close(fd)
  }
}

export function detachSockops(progFd: number, cgroupDir: string): void {
  const fd = openDir(cgroupDir)
  try {
    check(
      libbpf().bpf_prog_detach2(progFd, fd, BPF_CGROUP_SOCK_OPS) as number,
      'EATTACH',
      `detaching sock_ops from ${cgroupDir}`,
    )
  } finally {
    libc().close(fd)
  }
}

export function attachSkMsg(progFd: number, sockhashFd: number): void {
  check(
    libbpf().bpf_prog_attach(progFd, sockhashFd, BPF_SK_MSG_VERDICT, 0) as number,
    'EATTACH',
    'attaching sk_msg to the sockhash',
  )
}

export function detachSkMsg(progFd: number, sockhashFd: number): void {
  check(
    libbpf().bpf_prog_detach2(progFd, sockhashFd, BPF_SK_MSG_VERDICT) as number,
    'EATTACH',
    'detaching sk_msg from the sockhash',
  )
}
