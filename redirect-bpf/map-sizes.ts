// How many entries the node's ipcache and policy map hold: settings, applied when the maps are
// made (the C header's sizes are the defaults). Maps pinned by an earlier agent keep their size:
// one of another size is made anew at a fresh start, and refused when taking over (both agents
// run on the same maps then).

import { existsSync, readFileSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { cString, libc } from '../lib/libc.js'
import { BpfError, libbpf } from './libbpf.js'

export interface MapSizes {
  ipcacheEntries: number
  policyEntries: number
}

/** L7_MAX_IPCACHE and L7_MAX_POLICY in l7proxy-maps.h. */
export const DEFAULT_MAP_SIZES: Readonly<MapSizes> = { ipcacheEntries: 65536, policyEntries: 65536 }
export const MAP_SIZE_RANGE = { min: 16, max: 1 << 24 } as const

/** The map each setting sizes. */
export const SIZED_MAPS = { l7_ipcache: 'ipcacheEntries', l7_policy: 'policyEntries' } as const satisfies Record<
  string,
  keyof MapSizes
>

/** max_entries of a pinned map, or null when nothing is pinned there. */
function pinnedSize(path: string): number | null {
  if (!existsSync(path)) return null
  const fd = libbpf().bpf_obj_get(cString(path)) as number
  if (fd < 0) return null
  try {
    const m = /^max_entries:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))
    return m ? Number(m[1]) : null
  } finally {
    libc().close(fd)
  }
}

/**
 * Before the objects are loaded: a pinned map of another size is unpinned (a fresh start makes
 * it anew and fills it), or refused when taking over.
 */
export function preparePinnedSizes(pinRoot: string, sizes: MapSizes, takeover: boolean): void {
  for (const [map, setting] of Object.entries(SIZED_MAPS)) {
    const path = join(pinRoot, map)
    const have = pinnedSize(path)
    if (have === null || have === sizes[setting]) continue
    if (takeover) {
      throw new BpfError(
        'EMAP',
        `maps.${setting} is ${sizes[setting]}, the running agent's ${map} holds ${have}: a takeover keeps the maps, so their sizes cannot change (restart without --takeover to resize)`,
      )
    }
    unlinkSync(path)
  }
}

/** max_entries per map name, for BpfObject.load. */
export function maxEntries(sizes: MapSizes): Record<string, number> {
  return Object.fromEntries(Object.entries(SIZED_MAPS).map(([map, setting]) => [map, sizes[setting]]))
}
