// How one HTTP/2 stream's ending reaches its peer stream on the other hop: a clean end as
// END_STREAM, a reset as RST_STREAM with the same code, never one for the other.
//
// RST_STREAM with a code, and nothing before it. Node's Http2Stream.close(code) first ends the
// stream's writable side, which puts END_STREAM on the wire ahead of the RST_STREAM: a response or
// upload the proxy cuts would look complete to the other side. Marking the writable side as
// ending (the flag end() would set) makes close() send the reset alone.

import { constants, type Http2Stream } from 'node:http2'

export function resetStream(stream: Http2Stream, code: number): void {
  if (stream.closed || stream.destroyed) return
  if (code !== constants.NGHTTP2_NO_ERROR) {
    const w = (stream as unknown as { _writableState?: { ending: boolean } })._writableState
    if (w !== undefined) w.ending = true
  }
  stream.close(code)
}

/**
 * `from`'s body into `to` with back-pressure; `to` ends only when `from` ended cleanly (a reset
 * also ends a Node stream's readable side, after setting its rstCode: the caller resets `to`).
 */
export function relay(from: Http2Stream, to: Http2Stream): void {
  from.pipe(to, { end: false })
  from.once('end', () => {
    if (!from.rstCode) to.end()
  })
}
