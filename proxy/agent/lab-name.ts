// What names a lab: the agent's configuration and the CLI take one (`lab:`, `--lab`) to run in, or
// ask, a lab's node; the lab itself (lab/) uses the same rule and default.

export const DEFAULT_LAB = 'main'

const LAB_NAME_RE = /^[a-z0-9]{1,16}$/

/** 1-16 characters from a-z and 0-9. */
export function isValidLabName(name: string): boolean {
  return LAB_NAME_RE.test(name)
}
