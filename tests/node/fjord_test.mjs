// A Node.js client of Fjord's record-level gRPC API, with nothing but
// @grpc/grpc-js and the .proto loaded at run time by @grpc/proto-loader.
//
// Usage: node fjord_test.mjs HOST:PORT
//
// Creates a topic, publishes records (keyed and keyless, null and empty
// values, headers with a repeated key) with Publish, reads them all back
// with Read, then follows the tail with ReadStream from the high watermark
// while 5 more records are published. Prints "node client ok: ..." and
// exits 0, or names the first difference and exits 1.
//
// The packages come from tests/node/package.json; tests/other_languages.rs
// installs them into a cache and points NODE_PATH at it (createRequire
// below honours NODE_PATH, ES module imports would not).

import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../proto');
const TIMEOUT_MS = 10_000; // each unary call
const TOTAL_TIMEOUT_MS = 60_000; // the whole program
const TOPIC = 'node-orders';
const PARTITIONS = 2;
const RECORDS = 200;
const PER_REQUEST = 100;
const TAIL_RECORDS = 5;

function fail(message) {
  console.error(`fjord_test.mjs: ${message}`);
  process.exit(1);
}

function check(ok, message) {
  if (!ok) fail(message);
}

setTimeout(() => fail(`did not finish in ${TOTAL_TIMEOUT_MS} ms`), TOTAL_TIMEOUT_MS).unref();

const addr = process.argv[2] ?? fail('usage: node fjord_test.mjs HOST:PORT');
// keepCase false: fields are camelCase (nextOffset). Longs as Numbers (every
// offset here is far below 2^53), bytes as Buffers (the default), enums as
// their names; oneofs true gives proto3 `optional` fields their presence.
const definition = protoLoader.loadSync('fjord/v1/fjord.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const fjord = grpc.loadPackageDefinition(definition).fjord.v1;
const credentials = grpc.credentials.createInsecure();
const admin = new fjord.Admin(addr, credentials);
const producer = new fjord.Producer(addr, credentials);
const consumer = new fjord.Consumer(addr, credentials);

/** One unary call, as a promise that rejects with the method and status. */
function call(client, method, request) {
  return new Promise((resolvePromise, reject) => {
    client[method](request, { deadline: Date.now() + TIMEOUT_MS }, (err, response) => {
      if (err) reject(new Error(`${method}: ${grpc.status[err.code]}: ${err.details}`));
      else resolvePromise(response);
    });
  });
}

/** A present optional field's value, or null when unset. */
function present(message, field) {
  return message[`_${field}`] === field ? message[field] : null;
}

/** Record i as sent; `key`/`value` null are left unset (no key, null value). */
function record(i) {
  return {
    key: i % 10 === 9 ? null : Buffer.from(`key-${i % 10}`),
    value: i % 50 === 7 ? null : i % 50 === 8 ? Buffer.alloc(0) : Buffer.from(`value-${i}`),
    headers: [
      { key: 'i', value: Buffer.from(String(i)) },
      { key: 'empty', value: Buffer.alloc(0) },
      { key: 'i', value: null },
    ],
  };
}

function toRequest(r) {
  const out = { headers: r.headers.map((h) => (h.value === null ? { key: h.key } : h)) };
  if (r.key !== null) out.key = r.key;
  if (r.value !== null) out.value = r.value;
  return out;
}

function same(a, b) {
  return a === null || b === null ? a === b : Buffer.compare(a, b) === 0;
}

function checkRecord(where, got, want) {
  for (const field of ['key', 'value']) {
    const value = present(got, field);
    check(same(value, want[field]), `${where}: ${field} ${value}, published ${want[field]}`);
  }
  const headers = got.headers.map((h) => [h.key, present(h, 'value')]);
  const ok =
    headers.length === want.headers.length &&
    headers.every(([k, v], j) => k === want.headers[j].key && same(v, want.headers[j].value));
  check(ok, `${where}: headers ${JSON.stringify(headers)}, published ${JSON.stringify(want.headers)}`);
}

async function publish(records, partition) {
  const request = { topic: TOPIC, records: records.map(toRequest) };
  if (partition !== undefined) request.records.forEach((r) => (r.partition = partition));
  const resp = await call(producer, 'publish', request);
  const n = resp.results.length;
  check(n === records.length, `${n} results for ${records.length} records`);
  for (const r of resp.results) check(!r.error, `publish failed: ${JSON.stringify(r.error)}`);
  return resp.results;
}

async function readToEnd(partition) {
  const records = [];
  for (let offset = 0; ; ) {
    const resp = await call(consumer, 'read', { topic: TOPIC, partition, offset, maxRecords: 1000 });
    records.push(...resp.records);
    offset = resp.nextOffset;
    if (offset >= resp.highWatermark) return records;
  }
}

async function publishAndRead() {
  const placed = new Map(); // "partition/offset" -> i
  const keyPartition = new Map();
  for (let first = 0; first < RECORDS; first += PER_REQUEST) {
    const ids = Array.from({ length: PER_REQUEST }, (_, j) => first + j);
    const results = await publish(ids.map(record));
    results.forEach((r, j) => {
      check(r.partition < PARTITIONS, `record ${ids[j]} went to partition ${r.partition}`);
      const key = record(ids[j]).key?.toString();
      if (key !== undefined) {
        const before = keyPartition.get(key) ?? r.partition;
        check(before === r.partition, `key ${key} is on partitions ${before} and ${r.partition}`);
        keyPartition.set(key, r.partition);
      }
      placed.set(`${r.partition}/${r.offset}`, ids[j]);
    });
  }
  let read = 0;
  for (let p = 0; p < PARTITIONS; p++) {
    for (const got of await readToEnd(p)) {
      const i = placed.get(`${p}/${got.offset}`);
      const where = `partition ${p} offset ${got.offset}`;
      check(i !== undefined, `${where}: never published`);
      check(got.partition === p, `${where}: the record says partition ${got.partition}`);
      checkRecord(where, got, record(i));
      read++;
    }
  }
  check(read === RECORDS, `read ${read} records, published ${RECORDS}`);
}

/** ReadStream from partition 0's high watermark sees the records published after it opened. */
async function followTail() {
  const latest = { topic: TOPIC, partition: 0, spec: 'OFFSET_SPEC_LATEST' };
  const end = (await call(consumer, 'listOffsets', latest)).offset;
  const stream = consumer.readStream({ topic: TOPIC, partition: 0, offset: end });
  const seen = [];
  const delivered = new Promise((resolvePromise, reject) => {
    stream.on('data', (resp) => {
      seen.push(...resp.records);
      if (seen.length >= TAIL_RECORDS) resolvePromise();
    });
    stream.on('error', (err) => {
      if (err.code === grpc.status.CANCELLED) return; // our own cancel() below
      reject(new Error(`ReadStream: ${grpc.status[err.code]}: ${err.details}`));
    });
    stream.on('end', () => reject(new Error(`ReadStream ended after ${seen.length} records`)));
  });
  const tail = Array.from({ length: TAIL_RECORDS }, (_, j) => ({
    key: Buffer.from(`tail-${j}`),
    value: Buffer.from(`tail-value-${j}`),
    headers: [{ key: 'tail', value: Buffer.from(String(j)) }],
  }));
  const results = await publish(tail, 0);
  await delivered;
  stream.cancel();
  const n = seen.length;
  check(n === TAIL_RECORDS, `ReadStream delivered ${n} records, ${TAIL_RECORDS} were published`);
  seen.forEach((got, j) => {
    const want = results[j].offset;
    check(want === end + j, `tail record ${j} published at ${want}, the stream opened at ${end}`);
    check(got.offset === want, `tail record ${j} read at ${got.offset}, published at ${want}`);
    checkRecord(`tail record ${j}`, got, tail[j]);
  });
  return end;
}

try {
  await call(admin, 'createTopic', { name: TOPIC, partitions: PARTITIONS });
  await publishAndRead();
  const end = await followTail();
  console.log(
    `node client ok: ${RECORDS} records published and read back from ${PARTITIONS} partitions, ` +
      `ReadStream from offset ${end} followed ${TAIL_RECORDS} new records`,
  );
} catch (err) {
  fail(err.message);
} finally {
  for (const client of [admin, producer, consumer]) client.close();
}
