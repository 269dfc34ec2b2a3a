// Replacing a file so a reader sees the old text or the new, never half of one: written beside it
// under a hidden temporary name (directory watchers that skip dotfiles never see it), then renamed
// over it.

import { renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'

export function writeFileAtomic(file: string, data: string, mode = 0o644): void {
  const tmp = join(dirname(file), `.${basename(file)}.tmp-${process.pid}`)
  try {
    writeFileSync(tmp, data, { mode })
    renameSync(tmp, file)
  } catch (e) {
    rmSync(tmp, { force: true })
    throw e
  }
}
