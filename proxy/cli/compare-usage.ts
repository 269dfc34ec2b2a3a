// `l7proxy compare`'s usage line: the command itself (bench/compare/) is loaded only when it runs.

export const COMPARE_USAGE = `  compare [--duration S] [--runs R] [--warmup S] [--modes none,dnat,...] [--workloads http-keepalive,...]
          [--threads T] [--lab NAME] [--out FILE.json]
                            run every workload in every redirect mode (and with the peers haproxy
                            and dnsdist) in a lab of its own; writes JSON and an HTML report next
                            to it (default bench-results/compare.json)`
