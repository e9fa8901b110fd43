// aoconnect's mainnet mode (AO-Core paths) against an actorao node: spawn, message, result, dry-run
// and results, every call a signed ANS-104 item as aoconnect 0.0.98 sends it.
//
//   NODE_URL=http://127.0.0.1:PORT MODULE_ID=<a stored aos module> node aoconnect_mainnet.mjs
//
// Prints one line per step (ADDRESS, PROCESS, SLOT, RESULT, DRYRUN, SLOT2, CURRENT, LAST), then OK; on
// any failure prints `FAIL <message>` and exits 1.
import Arweave from 'arweave'
import { connect, createSigner } from '@permaweb/aoconnect'

const json = (v) => JSON.stringify(v)

try {
  const url = process.env.NODE_URL
  const jwk = await Arweave.init({}).wallets.generate()
  console.log('ADDRESS', await Arweave.init({}).wallets.jwkToAddress(jwk))
  const ao = connect({ MODE: 'mainnet', URL: url, signer: createSigner(jwk) })

  const processId = await ao.spawn({ module: process.env.MODULE_ID, tags: [{ name: 'Name', value: 'mainnet' }] })
  console.log('PROCESS', processId)

  const evalTags = [{ name: 'Action', value: 'Eval' }]
  const slot = await ao.message({ process: processId, tags: evalTags, data: '1 + 41' })
  console.log('SLOT', slot)
  const result = await ao.result({ process: processId, message: slot })
  console.log('RESULT', json(result.Output?.data ?? result.Output))

  const dry = await ao.dryrun({ process: processId, tags: evalTags, data: 'return 6 * 7' })
  console.log('DRYRUN', json(dry.Output?.data ?? dry.Output))

  const second = await ao.message({
    process: processId, tags: evalTags, data: 'Counter = (Counter or 0) + 1; return Counter'
  })
  console.log('SLOT2', second)
  const page = await ao.results({ process: processId })
  console.log('CURRENT', page.edges[0].cursor)
  console.log('LAST', json(page.edges[0].node.Output?.data ?? page.edges[0].node.Output))
  console.log('OK')
  process.exit(0)
} catch (err) {
  console.log('FAIL', err?.message ?? String(err))
  process.exit(1)
}
