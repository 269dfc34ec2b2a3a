// Loads the lab's gRPC service definition, shared by the lab server and the clients tests run.

import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { projectRoot } from '../../lib/project-root.js'

export const DEATHSTAR_SERVICE = 'empire.Deathstar'

export function loadDeathstar(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(join(projectRoot(), 'lab/proto/deathstar.proto'), {
    keepCase: false,
    longs: Number,
    defaults: true,
  })
  const pkg = grpc.loadPackageDefinition(def) as unknown as { empire: { Deathstar: grpc.ServiceClientConstructor } }
  return pkg.empire.Deathstar
}
