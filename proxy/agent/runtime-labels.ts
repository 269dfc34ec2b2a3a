// A container's labels as its runtime knows them: a command (podman's `container inspect` by
// default) run with the container's id last, printing the labels as a JSON object (or null for
// none). A failure or a container it does not know yet is "not known yet" (null).

import { execFile } from 'node:child_process'

/** podman's labels of a container, as `podman run --label app=x` set them. */
export const PODMAN_LABELS_COMMAND: readonly string[] = [
  'podman',
  'container',
  'inspect',
  '--format',
  '{{json .Config.Labels}}',
]

/** Labels from what the command printed; null when it is not a JSON object of strings (or null). */
export function parseLabels(stdout: string): Record<string, string> | null {
  let v: unknown
  try {
    v = JSON.parse(stdout.trim())
  } catch {
    return null
  }
  if (v === null) return {}
  if (typeof v !== 'object' || Array.isArray(v)) return null
  const out: Record<string, string> = {}
  for (const [k, value] of Object.entries(v as Record<string, unknown>)) {
    if (typeof value !== 'string') return null
    out[k] = value
  }
  return out
}

/** Runs `command` with the container id; its labels, or null while the runtime cannot tell. */
export function runtimeLabels(
  command: readonly string[],
): (containerId: string) => Promise<Record<string, string> | null> {
  return (containerId) =>
    new Promise((resolve) => {
      execFile(command[0]!, [...command.slice(1), containerId], { timeout: 10_000, encoding: 'utf8' }, (err, stdout) =>
        resolve(err ? null : parseLabels(stdout)),
      )
    })
}
