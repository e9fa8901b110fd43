// End-to-end check of an actorao node with the real aoconnect client (legacy mode).
//
//   NODE_URL=http://127.0.0.1:PORT AOS_WASM=path/to/aos.wasm [SCHEDULER=addr] node aoconnect_flow.mjs
//
// The one node serves as MU, CU and gateway. Prints one line per step
// (ADDRESS, MODULE, PROCESS, MESSAGE, RESULT, DRYRUN, MESSAGE2, RESULTS, LAST),
// then OK; on any failure prints `FAIL <message>` and exits 1.
import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import Arweave from 'arweave'
import * as ArBundles from '@dha-team/arbundles'
import { connect, createDataItemSigner } from '@permaweb/aoconnect'

const { createData, DataItem, SIG_CONFIG } = ArBundles.default ?? ArBundles
const NODE_URL = (process.env.NODE_URL ?? '').replace(/\/+$/, '')
const json = (v) => JSON.stringify(v)

// In 0.0.98 createDataItemSigner(jwk) returns a low-level signer
// `(create, kind) => {signature, address}`: it calls `create({type, publicKey})`,
// signs the deep hash that create returns, and hands back the raw signature.
// Build an arbitrary ANS-104 item with it, the same way aoconnect does internally.
async function signItem (signer, { data, tags, target, anchor }) {
  let item
  const { signature } = await signer(async ({ type = 1, publicKey }) => {
    const cfg = SIG_CONFIG[type]
    item = createData(data, {
      signatureType: type,
      signatureLength: cfg.sigLength,
      ownerLength: cfg.pubLength,
      publicKey: Buffer.from(publicKey)
    }, { tags, target, anchor })
    return item.getSignatureData()
  }, 'ans104')
  const raw = item.getRaw()
  raw.set(signature, 2)
  if (!(await DataItem.verify(raw))) throw new Error('module data item failed to verify')
  return { id: createHash('sha256').update(signature).digest('base64url'), raw }
}

// CU endpoints resolve non-2xx JSON bodies instead of throwing: surface them.
function check (what, res) {
  if (res && typeof res === 'object' && res.error !== undefined) throw new Error(`${what}: ${json(res.error)}`)
  return res
}

function printResult (label, res) {
  check(label, res)
  console.log(label, json(res.Output?.data ?? res.Output))
  if (res.Error) console.log(`${label}_ERROR`, json(res.Error))
}

try {
  if (!NODE_URL) throw new Error('NODE_URL is not set')
  if (!process.env.AOS_WASM) throw new Error('AOS_WASM is not set')

  // a. wallet
  const arweave = Arweave.init({})
  const jwk = await arweave.wallets.generate()
  const address = await arweave.wallets.jwkToAddress(jwk)
  console.log('ADDRESS', address)
  const signer = createDataItemSigner(jwk)

  let scheduler = process.env.SCHEDULER
  if (!scheduler) {
    const info = await fetch(`${NODE_URL}/`)
    if (!info.ok) throw new Error(`GET / -> ${info.status}: ${await info.text()}`)
    scheduler = (await info.json()).address
  }

  // b. upload the module as a signed data item
  const mod = await signItem(signer, {
    data: await readFile(process.env.AOS_WASM),
    tags: [
      { name: 'Data-Protocol', value: 'ao' },
      { name: 'Variant', value: 'ao.TN.1' },
      { name: 'Type', value: 'Module' },
      { name: 'Module-Format', value: 'wasm64-unknown-emscripten-draft_2024_02_15' },
      { name: 'Input-Encoding', value: 'JSON-1' },
      { name: 'Output-Encoding', value: 'JSON-1' },
      { name: 'Memory-Limit', value: '1-gb' },
      { name: 'Compute-Limit', value: '9000000000000' }
    ]
  })
  const up = await fetch(`${NODE_URL}/`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
    body: mod.raw
  })
  if (!up.ok) throw new Error(`module upload -> ${up.status}: ${await up.text()}`)
  console.log('MODULE', mod.id)

  const ao = connect({ MODE: 'legacy', MU_URL: NODE_URL, CU_URL: NODE_URL, GATEWAY_URL: NODE_URL })

  // c. spawn
  const processId = await ao.spawn({ module: mod.id, scheduler, signer, tags: [{ name: 'Name', value: 'flow' }] })
  console.log('PROCESS', processId)

  // d, e. message + result
  const evalTags = [{ name: 'Action', value: 'Eval' }]
  const messageId = await ao.message({ process: processId, signer, tags: evalTags, data: '1 + 41' })
  console.log('MESSAGE', messageId)
  printResult('RESULT', await ao.result({ message: messageId, process: processId }))

  // f. dryrun: aos evaluates Eval only from its owner, and a dry-run's Owner is whatever it claims
  printResult('DRYRUN', await ao.dryrun({ process: processId, tags: evalTags, data: 'return 6 * 7', Owner: address }))

  // g. second message, then the results page
  const second = await ao.message({
    process: processId, signer, tags: evalTags, data: 'Counter = (Counter or 0) + 1; return Counter'
  })
  console.log('MESSAGE2', second)
  const page = check('RESULTS', await ao.results({ process: processId, sort: 'ASC', limit: 25 }))
  const edges = page.edges ?? []
  console.log('RESULTS', edges.length)
  const last = edges.at(-1)?.node
  console.log('LAST', json(last?.Output?.data ?? last?.Output))

  console.log('OK')
  process.exit(0)
} catch (err) {
  console.log('FAIL', err?.message ?? String(err))
  process.exit(1)
}
