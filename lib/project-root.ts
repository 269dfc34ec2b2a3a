// Where the installed project lives, found from this file's own location, so that built
// artifacts (dist/, BPF objects) and shipped data (protos) are found whatever the cwd, both when
// running from source under tap and from dist/.

import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

let cached: string | undefined

export function projectRoot(): string {
  if (cached) return cached
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'tsconfig.json'))) return (cached = dir)
    dir = dirname(dir)
  }
  throw new Error(`cannot find the l7proxy project root above ${fileURLToPath(import.meta.url)}`)
}

/** Path of a built file under dist/, e.g. distPath('lab/servers/run.js'). */
export function distPath(rel: string): string {
  return join(projectRoot(), 'dist', rel)
}
