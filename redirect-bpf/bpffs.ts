// The BPF filesystem that pinned maps live in. `ip netns exec` hides /sys/fs/bpf, so l7proxy
// mounts a bpffs of its own (under /run/l7proxy by default) and pins there.

import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs'
import { resolve } from 'node:path'
import koffi from 'koffi'
import { cString, libc } from '../lib/libc.js'
import { BpfError, errnoName } from './libbpf.js'

export function isBpffs(dir: string): boolean {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
  return mounts.split('\n').some((l) => {
    const [, target, type] = l.split(' ')
    return type === 'bpf' && target === dir
  })
}

/**
 * mkdir -p one component at a time: Node's recursive mkdirSync loops for ever where sysfs
 * answers ENOENT for a directory it will not create (/sys/fs/bpf/x after `ip netns exec`).
 */
function makeDirs(dir: string): void {
  let path = ''
  for (const part of resolve(dir).split('/').filter(Boolean)) {
    path += `/${part}`
    try {
      mkdirSync(path)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new BpfError(
          'EMOUNT',
          `cannot create ${dir} for a bpffs: ${(e as NodeJS.ErrnoException).code} at ${path}`,
        )
    }
  }
}

/** Mounts a bpffs at `dir` unless one is there already. */
export function ensureBpffs(dir: string): void {
  if (isBpffs(dir)) return
  makeDirs(dir)
  const rc = libc().mount(cString('bpf'), cString(dir), cString('bpf'), 0, null) as number
  if (rc !== 0) {
    const errno = koffi.errno()
    throw new BpfError(
      'EMOUNT',
      `cannot mount a bpffs at ${dir}: ${errnoName(errno)}${errno === 1 ? ' (needs root / CAP_SYS_ADMIN)' : ''}`,
      { errno },
    )
  }
}

/** The kernel's bpf_preload puts these in every bpffs; they cannot be unlinked, only unmounted. */
const KERNEL_PRELOADED = new Set(['maps.debug', 'progs.debug'])

/** Unpins everything under `dir`, unmounts it and removes the directory. */
export function removeBpffs(dir: string): void {
  if (isBpffs(dir)) {
    for (const entry of readdirSync(dir))
      if (!KERNEL_PRELOADED.has(entry)) rmSync(`${dir}/${entry}`, { recursive: true, force: true })
    const rc = libc().umount2(cString(dir), 0) as number
    if (rc !== 0) throw new BpfError('EMOUNT', `cannot unmount ${dir}: ${errnoName(koffi.errno())}`)
  }
  try {
    rmdirSync(dir)
  } catch {
    // already gone
  }
}
