// Typed errors of the lab, with codes a caller can switch on.

import { L7ProxyError } from '../lib/l7proxy-error.js'

export type LabErrorCode =
  | 'ENOTROOT' // needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) for namespaces
  | 'ENOCMD' // a system command is missing
  | 'ECMD' // a system command failed
  | 'ESERVER' // a lab server did not come up
  | 'EBADNAME' // invalid lab or host name
  | 'EHOST' // no such host in the lab
  | 'EETCD' // the lab's etcd server is not in the state asked for

export class LabError extends L7ProxyError {
  declare readonly code: LabErrorCode
  constructor(code: LabErrorCode, message: string) {
    super(code, message)
  }
}
