// What the HTTP/2 proxy knows about gRPC: which streams are calls, the service and method a call
// names, and a denial in gRPC's own terms (a trailers-only response with grpc-status), so a client
// reports PERMISSION_DENIED with the proxy's message instead of UNKNOWN for an HTTP 403.

export const GRPC_PERMISSION_DENIED = 7
export const GRPC_UNAVAILABLE = 14
export const GRPC_INTERNAL = 13
export const GRPC_DEADLINE_EXCEEDED = 4

/** A gRPC call by its content type (application/grpc, application/grpc+proto, ...). */
export function isGrpc(contentType: string | undefined): boolean {
  return (
    contentType?.startsWith('application/grpc') === true &&
    (contentType.length === 16 || contentType[16] === '+' || contentType[16] === ';')
  )
}

/** `/package.Service/Method` split in two; null for a path that names no call. */
export function grpcCall(path: string): { service: string; method: string } | null {
  const slash = path.indexOf('/', 1)
  if (path[0] !== '/' || slash < 2 || slash === path.length - 1 || path.indexOf('/', slash + 1) >= 0) return null
  return { service: path.slice(1, slash), method: path.slice(slash + 1) }
}

/** grpc-message is percent-encoded UTF-8: everything outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(message: string): string {
  let out = ''
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/** A trailers-only response: the call ends with `status` before any message. */
export function grpcTrailersOnly(status: number, message: string): Array<[string, string]> {
  return [
    [':status', '200'],
    ['content-type', 'application/grpc'],
    ['grpc-status', String(status)],
    ['grpc-message', encodeGrpcMessage(message)],
  ]
}
