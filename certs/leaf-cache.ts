// Leaf certificates for intercepted server names, minted on first use from the local CA and kept
// as ready TLS contexts: bounded (least recently used go first), renewed well before they expire,
// and one mint per name however many connections ask for it at once.

import { createSecureContext, type SecureContext } from 'node:tls'
import { issueLeaf, type LocalCa } from './local-ca.js'

const LEAF_DAYS = 7
/** A leaf with less than this left is replaced on its next use. */
const RENEW_BEFORE_MS = 2 * 86_400_000

interface Entry {
  context: Promise<SecureContext>
  notAfter: number
}

export class LeafCache {
  private ca: Promise<LocalCa> | null = null
  private readonly entries = new Map<string, Entry>()
  /** Leaves minted so far (for tests and metrics). */
  minted = 0

  constructor(
    private readonly loadCa: () => Promise<LocalCa>,
    private readonly max = 1000,
  ) {}

  /** The TLS context presenting a leaf for `name` (lower case). Rejects when the CA cannot be loaded. */
  context(name: string): Promise<SecureContext> {
    const hit = this.entries.get(name)
    this.entries.delete(name) // re-inserted below: most recently used last
    const entry = hit && hit.notAfter - Date.now() > RENEW_BEFORE_MS ? hit : this.mint(name)
    this.entries.set(name, entry)
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!)
    return entry.context
  }

  private mint(name: string): Entry {
    if (this.ca === null) {
      const ca = this.loadCa()
      ca.catch(() => this.ca === ca && (this.ca = null)) // a CA made later is picked up on the next try
      this.ca = ca
    }
    const ca = this.ca
    // Until the leaf is made its expiry is unknown: counted as fresh, the promise is shared.
    const entry: Entry = { notAfter: Infinity, context: Promise.resolve(null as unknown as SecureContext) }
    entry.context = (async () => {
      const leaf = await issueLeaf(await ca, name, LEAF_DAYS)
      this.minted++
      entry.notAfter = leaf.notAfter.getTime()
      return createSecureContext({ cert: leaf.certPem, key: leaf.keyPem })
    })()
    entry.context.catch(() => this.entries.get(name) === entry && this.entries.delete(name))
    return entry
  }
}
