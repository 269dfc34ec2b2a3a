// The policy directory the agent enforces: every `*.yaml`/`*.yml` file in it (hidden and editor
// backup files ignored). Changes are found by comparing contents, on fs.watch events (debounced)
// and on a periodic rescan (watch events can be missed, e.g. across renames), and handed on as
// one list per scan: added or changed files with their text, removed ones with null.

import { type FSWatcher, readdirSync, readFileSync, statSync, watch } from 'node:fs'
import { join } from 'node:path'

export interface PolicyFileChange {
  /** The file's path (the engine names its rules' sources by it). */
  file: string
  /** The new text; null when the file is gone. */
  text: string | null
  /** When the file was last modified (ms since the epoch); for removals, when it was noticed. */
  changedAt: number
}

const POLICY_FILE = /^[^.~#][^~#]*\.ya?ml$/

/** The changes that turn `before` into `after` (file -> text), in file name order. Pure. */
export function diffPolicyFiles(
  before: ReadonlyMap<string, string>,
  after: ReadonlyMap<string, string>,
): Array<{ file: string; text: string | null }> {
  const out: Array<{ file: string; text: string | null }> = []
  for (const [file, text] of after) if (before.get(file) !== text) out.push({ file, text })
  for (const file of before.keys()) if (!after.has(file)) out.push({ file, text: null })
  return out.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0))
}

export class PolicyDirectory {
  private known = new Map<string, string>()
  private watcher: FSWatcher | null = null
  private rescan: NodeJS.Timeout | null = null
  private debounce: NodeJS.Timeout | null = null

  constructor(readonly dir: string) {}

  /** Reads the directory now; returns what changed since the last scan. */
  scan(): PolicyFileChange[] {
    const now = new Map<string, string>()
    const mtimes = new Map<string, number>()
    for (const name of readdirSync(this.dir).sort()) {
      if (!POLICY_FILE.test(name)) continue
      const file = join(this.dir, name)
      try {
        const st = statSync(file)
        if (!st.isFile()) continue
        now.set(file, readFileSync(file, 'utf8'))
        mtimes.set(file, st.mtimeMs)
      } catch {
        // Gone between readdir and read: the next scan sees it as removed.
      }
    }
    const changes = diffPolicyFiles(this.known, now).map((c) => ({ ...c, changedAt: mtimes.get(c.file) ?? Date.now() }))
    this.known = now
    return changes
  }

  /** Calls `onChanges` with each non-empty scan after a watch event (debounced) or every `rescanMs`. */
  watch(onChanges: (changes: PolicyFileChange[]) => void, opts: { debounceMs?: number; rescanMs?: number } = {}): void {
    const run = (): void => {
      this.debounce = null
      let changes: PolicyFileChange[]
      try {
        changes = this.scan()
      } catch {
        return // the directory itself is unreadable right now: keep what is enforced
      }
      if (changes.length > 0) onChanges(changes)
    }
    this.watcher = watch(this.dir, () => {
      if (this.debounce === null) this.debounce = setTimeout(run, opts.debounceMs ?? 20)
    })
    this.watcher.on('error', () => undefined) // the periodic rescan still runs
    this.rescan = setInterval(run, opts.rescanMs ?? 2_000)
    this.rescan.unref()
  }

  close(): void {
    this.watcher?.close()
    if (this.rescan) clearInterval(this.rescan)
    if (this.debounce) clearTimeout(this.debounce)
  }
}
