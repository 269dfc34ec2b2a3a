// Where the FQDN cache outlives the agent: one JSON file, replaced atomically (written aside,
// then renamed over) on every change, read back at start. A file that cannot be read or parsed
// is set aside (renamed .bad) and the agent starts with an empty cache rather than not at all.

import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomic } from '../../lib/atomic-write.js'
import type { CacheEntry } from './fqdn-cache.js'

export class FqdnStore {
  readonly file: string

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    this.file = join(dir, 'fqdn-cache.json')
  }

  /** The saved entries, or [] (with the reason) when there are none or they are unreadable. */
  load(): { entries: unknown; problem: string | null } {
    if (!existsSync(this.file)) return { entries: [], problem: null }
    try {
      return { entries: JSON.parse(readFileSync(this.file, 'utf8')) as unknown, problem: null }
    } catch (e) {
      renameSync(this.file, `${this.file}.bad`)
      return { entries: [], problem: `${this.file}: ${(e as Error).message} (set aside as ${this.file}.bad)` }
    }
  }

  save(entries: readonly CacheEntry[]): void {
    writeFileAtomic(this.file, JSON.stringify(entries), 0o600)
  }
}
