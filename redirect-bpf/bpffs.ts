// The BPF filesystem that pinned maps live in. `ip netns exec` hides /sys/fs/bpf, so l7proxy
// mounts a bpffs of its own (under /run/l7proxy by default) and pins there.

import { mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs'
import { BpfError, cString, errnoName, libbpf } from './libbpf.js'
import koffi from 'koffi'

export function isBpffs(dir: string): boolean {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
  return mounts.split('\n').some((l) => {
    const [, target, type] = l.split(' ')
    return type === 'bpf' && target === dir
  })
}

/** Mounts a bpffs at `dir` unless one is there already. */
export function ensureBpffs(dir: string): void {
  if (isBpffs(dir)) return
  mkdirSync(dir, { recursive: true })
  const rc = libbpf().mount(cString('bpf'), cString(dir), cString('bpf'), 0, null) as number
  if (rc !== 0) {
    const errno = koffi.errno()
    throw new BpfError('EMOUNT', `cannot mount a bpffs at ${dir}: ${errnoName(errno)}${errno === 1 ? ' (needs root / CAP_SYS_ADMIN)' : ''}`, { errno })
  }
}

/** The kernel's bpf_preload puts these in every bpffs; they cannot be unlinked, only unmounted. */
const KERNEL_PRELOADED = new Set(['maps.debug', 'progs.debug'])

/** Unpins everything under `dir`, unmounts it and removes the directory. */
export function removeBpffs(dir: string): void {
  if (isBpffs(dir)) {
    for (const entry of readdirSync(dir)) if (!KERNEL_PRELOADED.has(entry)) rmSync(`${dir}/${entry}`, { recursive: true, force: true })
    const rc = libbpf().umount2(cString(dir), 0) as number
    if (rc !== 0) throw new BpfError('EMOUNT', `cannot unmount ${dir}: ${errnoName(koffi.errno())}`)
  }
  try {
    rmdirSync(dir)
  } catch {
    // already gone
  }
}
