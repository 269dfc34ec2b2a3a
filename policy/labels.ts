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

/** The inverse of labelString: `k8s:app=web` -> {source k8s, key app, value web}; null if it has no source. */
export function parseLabelString(s: string): Label | null {
  const colon = s.indexOf(':')
  if (colon <= 0) return null
  const eq = s.indexOf('=', colon + 1)
  const key = eq < 0 ? s.slice(colon + 1) : s.slice(colon + 1, eq)
  if (key === '') return null
  return { source: s.slice(0, colon), key, value: eq < 0 ? '' : s.slice(eq + 1) }
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

  /** From its canonical string (as a cluster's store keeps it); null if a part is not a label. */
  static fromCanonical(canonical: string): LabelSet | null {
    const labels: Label[] = []
    for (const part of canonical === '' ? [] : canonical.split(';')) {
      const l = parseLabelString(part)
      if (l === null) return null
      labels.push(l)
    }
    return new LabelSet(labels)
  }

  /** From a plain `{key: value}` map, keys optionally carrying their source. */
  static fromRecord(record: Readonly<Record<string, string>>, defaultSource = 'k8s'): LabelSet {
    return new LabelSet(Object.entries(record).map(([k, value]) => ({ ...splitSource(k, defaultSource), value })))
  }
}
