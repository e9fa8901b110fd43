// An aos-style console on aoconnect, for a terminal test (tests/test_aos_console.py drives it in tmux).
//
// The aos CLI that the npm registry serves (@permaweb/aos 1.2.18, "aos 0.2.18 [alpha]", 2023) is too old
// to talk to legacy units: it is built on @permaweb/ao-sdk 0.0.22, whose MU and CU URLs are compiled in,
// and it evaluates with `function`/`expression` tags that today's aos modules do not read. Current aos
// (2.0.x, not on npm) is built on aoconnect. This console makes the calls current aos makes in legacy mode,
// with the same parameters, read from aos's source (src/register.js, src/services/connect.js,
// src/evaluate.js, src/index.js):
// - modules found by GraphQL with Type=Module and a Name, sorted HEIGHT_DESC, each dated by its block;
// - a spawn tagged App-Name=aos, Name, aos-Version and Authority;
// - a line is a message Action=Eval with the line as Data, then its result; Output.data.output (or
//   Output.data) is printed, and Output.data.prompt becomes the prompt;
// - live: results polled first with {limit: 5, sort: 'DESC'}, then {from: cursor, limit: 1000}, where
//   cursor is the last edge's; every edge whose Output.print is true is printed once, in ordinate
//   order (read from the base64 JSON cursor), above the prompt.
//
// Environment: NODE_URL (the actorao node), AOS_WASM (the aos build), WALLET (a JWK file), NAME.
import { readFileSync } from 'node:fs'
import readline from 'node:readline'

import { connect, createDataItemSigner } from '@permaweb/aoconnect'
import * as ArBundles from '@dha-team/arbundles'
import Arweave from 'arweave'

const { createData, ArweaveSigner } = ArBundles.default ?? ArBundles
const url = process.env.NODE_URL
const name = process.env.NAME || 'default'
const jwk = JSON.parse(readFileSync(process.env.WALLET, 'utf8'))
const signer = createDataItemSigner(jwk)
const ao = connect({ MODE: 'legacy', MU_URL: url, CU_URL: url, GATEWAY_URL: url })
const say = (text) => process.stdout.write(text + '\n')

async function gql (query, variables) {
  const reply = await fetch(new URL('/graphql', url), {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ query, variables })
  })
  if (!reply.ok) throw new Error(`(${reply.status}) GQL ERROR`)
  return reply.json()
}

async function uploadModule () {
  // What `ao publish` leaves on Arweave: a signed Type=Module item carrying the binary.
  const tags = [
    { name: 'Data-Protocol', value: 'ao' }, { name: 'Variant', value: 'ao.TN.1' }, { name: 'Type', value: 'Module' },
    { name: 'Module-Format', value: 'wasm64-unknown-emscripten-draft_2024_02_15' },
    { name: 'Input-Encoding', value: 'JSON-1' }, { name: 'Output-Encoding', value: 'JSON-1' },
    { name: 'Memory-Limit', value: '1-gb' }, { name: 'Compute-Limit', value: '9000000000000' },
    { name: 'Name', value: 'aos' }
  ]
  const item = createData(readFileSync(process.env.AOS_WASM), new ArweaveSigner(jwk), { tags })
  await item.sign(new ArweaveSigner(jwk))
  const reply = await fetch(url + '/', { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: item.getRaw() })
  if (!reply.ok) throw new Error(`module upload: ${reply.status} ${await reply.text()}`)
}

async function findModule () {
  const found = await gql(`query FindAoModuleByName($name: String!) {
    transactions(tags: [{ name: "Type", values: ["Module"] }, { name: "Data-Protocol", values: ["ao"] },
                        { name: "Name", values: [$name] }], sort: HEIGHT_DESC, first: 100) {
      edges { node { id tags { name value } block { timestamp } } } } }`, { name: 'aos' })
  const edges = found.data.transactions.edges
  for (const [index, edge] of edges.entries()) {
    const format = edge.node.tags.find(t => t.name === 'Module-Format')?.value ?? 'Unknown Format'
    say(`module ${index + 1} - ${format} - ${edge.node.id} - ${new Date(edge.node.block.timestamp * 1000).toISOString()}`)
  }
  return edges[0].node.id
}

async function register (address) {
  const found = await gql(`query ($owners: [String!]!) {
    transactions(first: 10, owners: $owners, tags: [{ name: "Data-Protocol", values: ["ao"] },
      { name: "Type", values: ["Process"] }, { name: "Name", values: ["${name}"] }]) {
      edges { node { id tags { name value } } } } }`, { owners: [address] })
  if (found.data.transactions.edges.length > 0) return found.data.transactions.edges[0].node.id
  await uploadModule()
  const module = await findModule()
  const scheduler = (await (await fetch(url + '/')).json()).address
  return ao.spawn({
    module,
    scheduler,
    signer,
    tags: [{ name: 'App-Name', value: 'aos' }, { name: 'Name', value: name },
      { name: 'aos-Version', value: '2.0.6' }, { name: 'Authority', value: scheduler }]
  })
}

function show (result) {
  if (result.Error) return say(`error: ${result.Error}`)
  const output = result.Output
  if (output?.data !== undefined && output?.data !== null) {
    const data = output.data
    if (typeof data === 'object' && 'output' in data) say(String(data.output))
    else if (typeof data === 'object' && 'prompt' in data) say('')
    else say(typeof data === 'string' ? data : JSON.stringify(data))
    const next = typeof data === 'object' && 'prompt' in data ? data.prompt : output.prompt
    if (next) prompt = next
  } else if (typeof output === 'string') say(output)
}

let prompt = 'aos> '
let cursor = null
const printed = new Set()
const ordinate = (edge) => Number(JSON.parse(atob(edge.cursor)).ordinate)

async function checkLive (rl) {
  const params = cursor ? { process: pid, from: cursor, limit: 1000 } : { process: pid, limit: 5, sort: 'DESC' }
  const page = await ao.results(params)
  const edges = page.edges.filter(e => e.node?.Output?.print === true && !printed.has(e.cursor))
    .sort((a, b) => ordinate(a) - ordinate(b))
  if (page.edges.length > 0) cursor = page.edges[page.edges.length - 1].cursor
  for (const edge of edges) {
    printed.add(edge.cursor)
    readline.clearLine(process.stdout, 0)
    readline.cursorTo(process.stdout, 0)
    say(String(edge.node.Output.data))
    if (edge.node.Output.prompt) prompt = edge.node.Output.prompt
    rl.setPrompt(prompt)
    rl.prompt(true)
  }
}

const address = await new Arweave({}).wallets.jwkToAddress(jwk)
const pid = await register(address)
say(`aos process: ${pid}`)
const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true })
let evaluating = false
let live = false
setInterval(() => {
  if (live || evaluating) return
  live = true
  checkLive(rl).catch((err) => say(`live: ${err.message}`)).finally(() => { live = false })
}, 1000)
rl.setPrompt(prompt)
rl.prompt()
rl.on('line', async (line) => {
  if (line === '.exit') process.exit(0)
  evaluating = true
  try {
    const message = await ao.message({ process: pid, signer, tags: [{ name: 'Action', value: 'Eval' }], data: line })
    const result = await ao.result({ message, process: pid })
    show(result)
  } catch (err) {
    say(`error: ${err.message}`)
  } finally {
    evaluating = false
  }
  rl.setPrompt(prompt)
  rl.prompt()
})
