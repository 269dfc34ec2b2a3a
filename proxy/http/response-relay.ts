// Relays one upstream response (an undici dispatch) into the client's ServerResponse: hop-by-hop
// headers dropped, body chunks written as they come with back-pressure both ways (a slow client
// pauses the upstream read; a client that goes away aborts it), and upstream failures turned
// into 502 or 504 when nothing was sent yet.

import type { ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { endToEndRaw } from './hop-by-hop.js'

/** Told once: the status sent to the client, and the upstream error when there was one. */
export type RelayDone = (status: number, error: NodeJS.ErrnoException | null) => void

const TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT'])

function flatten(headers: Record<string, string | string[] | undefined>): string[] {
  const out: string[] = []
  for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v ?? '']) out.push(k, one)
  return out
}

export class ResponseRelay implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null
  private ended = false

  constructor(
    private readonly res: ServerResponse,
    private readonly done: RelayDone,
  ) {
    res.once('close', this.onClientClose)
  }

  private readonly onClientClose = (): void => {
    if (!this.ended) this.controller?.abort(new Error('client went away'))
  }

  private readonly onDrain = (): void => {
    this.controller?.resume()
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return // 1xx: Node answered the client's 100-continue itself
    // undici's raw list keeps the server's field order and repeated fields as they were; its
    // parsed object (documented, slower) when the controller has none.
    const raw = (c as { rawHeaders?: Buffer[] }).rawHeaders ?? flatten(headers)
    this.res.writeHead(statusCode, endToEndRaw(raw, headers.connection))
    this.done(statusCode, null)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', this.onDrain)
    }
  }

  onResponseEnd(): void {
    this.ended = true
    this.res.end()
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.ended = true
    if (this.res.destroyed) {
      this.done(499, err as NodeJS.ErrnoException) // the client left first (nginx's 499)
      return
    }
    if (this.res.headersSent) {
      this.res.destroy() // mid-body: the client must see the response was cut
      return
    }
    const code = (err as NodeJS.ErrnoException).code ?? ''
    const status = TIMEOUTS.has(code) ? 504 : 502
    const body = status === 504 ? 'Upstream timed out\n' : 'Upstream unavailable\n'
    this.res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
    this.res.end(body)
    this.done(status, err as NodeJS.ErrnoException)
  }
}
