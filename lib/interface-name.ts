// What the project takes as a network interface's name (an endpoints file, the configuration's
// interfaces, a CNI call): Linux's limit of 15 characters, and only letters, digits, '_', '.'
// and '-', so a name never carries a path, an address family's ':' or whitespace.

const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/

/** How a refusal describes the rule. */
export const INTERFACE_NAME_RULE = "1-15 letters, digits, '_', '.', '-'"

export function isInterfaceName(name: string): boolean {
  return INTERFACE_NAME.test(name)
}
