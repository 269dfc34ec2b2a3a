// A command line the CLI cannot accept: printed with the usage text, exit code 2.

import { L7ProxyError } from '../../lib/l7proxy-error.js'

export class UsageError extends L7ProxyError {
  constructor(message: string) {
    super('EUSAGE', message)
  }
}
