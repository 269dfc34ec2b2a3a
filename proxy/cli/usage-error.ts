// A command line the CLI cannot accept: printed with the usage text, exit code 2.

export class UsageError extends Error {
  readonly code = 'EUSAGE'
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}
