// What every error l7proxy reports to a person has: a code a caller can switch on (ENOAGENT,
// ELOAD, ECONFIG...) and a message that says what failed and where. The subsystems' errors
// (the lab's, the loader's, the agent's, the CA's) extend it, so the CLI tells them from a bug
// with one check.

export class L7ProxyError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = new.target.name
  }
}
