# l7proxy agent image. Build: docker build -t l7proxy .
# Run it as the agent runs on a node: host network, BPF and netns privileges, the host's bpffs
# (so pinned maps survive an agent restart) and cgroup2 (for sock_ops/sk_msg). See README.md.

# --- build: TypeScript and the BPF objects (clang, libbpf headers) ---------------------------
FROM node:24-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev linux-libc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

# --- runtime: Node, libbpf and the network tools the agent and the lab drive -----------------
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libbpf1 bpftool iproute2 iptables nftables procps util-linux unbound curl bind9-dnsutils ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/l7proxy
COPY --from=build /src/package.json /src/tsconfig.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY --from=build /src/lab/proto lab/proto
COPY --from=build /src/vendor vendor
ENTRYPOINT ["node", "/opt/l7proxy/dist/proxy/cli/main.js"]
# The agent for this host, configured by /etc/l7proxy/agent.yaml (see README.md, "The agent").
CMD ["agent", "--config", "/etc/l7proxy/agent.yaml"]
