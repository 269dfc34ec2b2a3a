// Labels as Cilium writes them: `source:key=value`, where a key without a source (`org`) means
// any source. Endpoint labels without a source are Kubernetes labels (`k8s`).

export interface Label {
  source: string
  key: string
  value: string
}

export const ANY_SOURCE = 'any'

/** Splits `k8s:app` into source and key; a key without `:` has the given default source. */
export function splitSource(key: string, defaultSource: string): { source: string; key: string } {
  const i = key.indexOf(':')
  return i > 0 ? { source: key.slice(0, i), key: key.slice(i + 1) } : { source: defaultSource, key }
}

export function labelString(l: Label): string {
  return l.value === '' ? `${l.source}:${l.key}` : `${l.source}:${l.key}=${l.value}`
}

export class LabelSet {
  readonly labels: readonly Label[]
  /** Sorted `source:key=value` strings joined by `;`: equal sets have equal strings. */
  readonly canonical: string
  private readonly byKey = new Map<string, Label[]>()

  constructor(labels: readonly Label[]) {
    const unique = new Map(labels.map((l) => [labelString(l), l]))
    this.labels = [...unique.values()].sort((a, b) => labelString(a).localeCompare(labelString(b)))
    this.canonical = [...unique.keys()].sort().join(';')
    for (const l of this.labels) {
      const list = this.byKey.get(l.key) ?? []
      list.push(l)
      this.byKey.set(l.key, list)
    }
  }

  /** Values of `key` from `source` (or any source). */
  values(source: string, key: string): string[] {
    const list = this.byKey.get(key)
    if (!list) return []
    return list.filter((l) => source === ANY_SOURCE || l.source === source).map((l) => l.value)
  }

  has(source: string, key: string): boolean {
    return this.values(source, key).length > 0
  }

  /** From a plain `{key: value}` map, keys optionally carrying their source. */
  static fromRecord(record: Readonly<Record<string, string>>, defaultSource = 'k8s'): LabelSet {
    return new LabelSet(Object.entries(record).map(([k, value]) => ({ ...splitSource(k, defaultSource), value })))
  }
}
