// Running synchronous work inside a named network namespace (/run/netns/NAME) from this thread:
// setns there, run, setns back. Netlink calls libbpf makes (TC attach) then act on that
// namespace. Only for synchronous code: the thread must not yield to the event loop meanwhile.

import koffi from 'koffi'
import { cString, libc } from '../lib/libc.js'
import { BpfError, errnoName } from './libbpf.js'

const CLONE_NEWNET = 0x40000000
const O_RDONLY_CLOEXEC = 0o2000000

/** An fd of the named namespace (/run/netns/NAME), or of this thread's when no name is given. */
export function openNetns(name?: string): number {
  return openNs(name === undefined ? '/proc/thread-self/ns/net' : `/run/netns/${name}`)
}

function openNs(path: string): number {
  const fd = libc().open(cString(path), O_RDONLY_CLOEXEC) as number
  if (fd < 0) throw new BpfError('ENETNS', `cannot open ${path}: ${errnoName(koffi.errno())}`)
  return fd
}

export function inNetns<T>(name: string, fn: () => T): T {
  const lib = libc()
  const self = openNs('/proc/thread-self/ns/net')
  const target = openNs(`/run/netns/${name}`)
  try {
    if ((lib.setns(target, CLONE_NEWNET) as number) !== 0) {
      throw new BpfError('ENETNS', `cannot enter network namespace ${name}: ${errnoName(koffi.errno())}`)
    }
    try {
      return fn()
    } finally {
      if ((lib.setns(self, CLONE_NEWNET) as number) !== 0) {
        // Staying in the wrong namespace would silently misdirect everything after: stop.
        process.stderr.write(`l7proxy: cannot return to the original network namespace: ${errnoName(koffi.errno())}\n`)
        process.exit(70)
      }
    }
  } finally {
    lib.close(target)
    lib.close(self)
  }
}
