// libc calls Node has no API for, through koffi: the process's open-file limit (the agent
// raises it at start) and giving freed heap memory back to the system (after a flood, see
// proxy/overload/pressure-monitor.ts). Loaded on first use.

import { readFileSync } from 'node:fs'
import koffi from 'koffi'

type Fn = (...args: unknown[]) => number

interface Libc {
  getrlimit: Fn
  setrlimit: Fn
  malloc_trim: Fn
}

let cached: Libc | undefined

function libc(): Libc {
  if (cached) return cached
  const lib = koffi.load('libc.so.6')
  cached = {
    getrlimit: lib.func('int getrlimit(int resource, void *rlim)') as Fn,
    setrlimit: lib.func('int setrlimit(int resource, const void *rlim)') as Fn,
    malloc_trim: lib.func('int malloc_trim(size_t pad)') as Fn,
  }
  return cached
}

const RLIMIT_NOFILE = 7

export interface FileLimit {
  soft: number
  hard: number
}

/** The process's open-file limit (struct rlimit: two 64-bit counts). */
export function fileLimit(): FileLimit {
  const buf = Buffer.alloc(16)
  if (libc().getrlimit(RLIMIT_NOFILE, buf) !== 0) throw new Error(`getrlimit(RLIMIT_NOFILE): errno ${koffi.errno()}`)
  return { soft: Number(buf.readBigUInt64LE(0)), hard: Number(buf.readBigUInt64LE(8)) }
}

/** Sets the open-file limit; false if the system refused (a hard limit above ours needs CAP_SYS_RESOURCE). */
export function setFileLimit(limit: FileLimit): boolean {
  const buf = Buffer.alloc(16)
  buf.writeBigUInt64LE(BigInt(limit.soft), 0)
  buf.writeBigUInt64LE(BigInt(limit.hard), 8)
  return libc().setrlimit(RLIMIT_NOFILE, buf) === 0
}

/** The most open files the kernel lets any process have (fs.nr_open). */
export function systemFileCeiling(): number {
  return Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim())
}

/** Has malloc give its free memory back to the system; whether any was. */
export function releaseFreeMemory(): boolean {
  return libc().malloc_trim(0) === 1
}
