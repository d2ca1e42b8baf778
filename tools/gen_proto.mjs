#!/usr/bin/env node
// Generates the static protobuf code used by concord.
//
//   proto/**/*.proto  --pbjs-->  src/gen/proto.js    (static-module, commonjs, --keep-case)
//                     --pbts-->  src/gen/proto.d.ts
//   src/gen/proto.js  --copy-->  dist/src/gen/proto.js   (tsc does not copy .js files)
//
// Regeneration is skipped when the hash of the inputs (proto files, generator
// options, tool versions and this script) equals the one stored in
// src/gen/.proto-hash. The dist copy is refreshed on every run.
//
// int64 fields keep protobufjs' default long handling (decoded as Long from the
// `long` package): 64-bit lease and member IDs need full precision, so
// --force-number must not be used.
//
// Usage: node tools/gen_proto.mjs [--force]

import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const protoDir = path.join(root, 'proto');
const genDir = path.join(root, 'src', 'gen');
const outJs = path.join(genDir, 'proto.js');
const outDts = path.join(genDir, 'proto.d.ts');
const hashFile = path.join(genDir, '.proto-hash');
const distJs = path.join(root, 'dist', 'src', 'gen', 'proto.js');
const cliDir = path.join(root, 'node_modules', 'protobufjs-cli');
const pbjs = path.join(cliDir, 'bin', 'pbjs');
const pbts = path.join(cliDir, 'bin', 'pbts');
const scratchRoot = path.join(root, 'node_modules', '.cache', 'gen_proto');

const PBJS_ARGS = ['-t', 'static-module', '-w', 'commonjs', '--keep-case'];
const PBTS_ARGS = [];

function log(msg) {
  process.stdout.write(`gen_proto: ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`gen_proto: ${msg}\n`);
  process.exit(1);
}

/** All .proto files under proto/, as sorted paths relative to proto/ (with '/'). */
function listProtos(dir, rel = '') {
  const out = [];
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const relPath = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) out.push(...listProtos(path.join(dir, ent.name), relPath));
    else if (ent.isFile() && ent.name.endsWith('.proto')) out.push(relPath);
  }
  return out.sort();
}

function pkgVersion(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version ?? '?';
  } catch {
    return 'missing';
  }
}

function inputHash(protos) {
  const h = createHash('sha256');
  h.update(`pbjs ${PBJS_ARGS.join(' ')}\npbts ${PBTS_ARGS.join(' ')}\n`);
  h.update(`protobufjs-cli ${pkgVersion(cliDir)}\n`);
  h.update(`protobufjs ${pkgVersion(path.join(root, 'node_modules', 'protobufjs'))}\n`);
  h.update(fs.readFileSync(fileURLToPath(import.meta.url)));
  for (const rel of protos) {
    const data = fs.readFileSync(path.join(protoDir, rel));
    h.update(`\0${rel}\0${data.length}\0`);
    h.update(data);
  }
  return h.digest('hex');
}

function run(script, args) {
  const res = spawnSync(process.execPath, [script, ...args], { cwd: root, encoding: 'utf8' });
  if (res.error) fail(`cannot run ${path.basename(script)}: ${res.error.message}`);
  if (res.status !== 0) {
    fail(`${path.basename(script)} failed (exit ${res.status}):\n${res.stderr || res.stdout}`);
  }
}

function generate(protos) {
  if (!fs.existsSync(pbjs) || !fs.existsSync(pbts)) {
    fail(`protobufjs-cli not found at ${cliDir} (run npm install)`);
  }
  fs.mkdirSync(genDir, { recursive: true });
  // Generate into a scratch directory first so a failed run never leaves a
  // half-written output next to a stale hash. It lives outside src/ (so a
  // concurrent tsc never sees it) but on the same filesystem (for rename).
  fs.mkdirSync(scratchRoot, { recursive: true });
  const tmpDir = fs.mkdtempSync(path.join(scratchRoot, 'run-'));
  try {
    const tmpJs = path.join(tmpDir, 'proto.js');
    const tmpDts = path.join(tmpDir, 'proto.d.ts');
    const files = protos.map((rel) => path.join(protoDir, ...rel.split('/')));
    run(pbjs, [...PBJS_ARGS, '-p', protoDir, '-o', tmpJs, ...files]);
    run(pbts, [...PBTS_ARGS, '-o', tmpDts, tmpJs]);
    fs.renameSync(tmpJs, outJs);
    fs.renameSync(tmpDts, outDts);
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

function ensureDistCopy() {
  const src = fs.readFileSync(outJs);
  let same = false;
  try {
    same = fs.readFileSync(distJs).equals(src);
  } catch {
    same = false;
  }
  if (!same) {
    fs.mkdirSync(path.dirname(distJs), { recursive: true });
    fs.writeFileSync(distJs, src);
    log(`copied ${path.relative(root, outJs)} -> ${path.relative(root, distJs)}`);
  }
}

function main() {
  const force = process.argv.includes('--force');
  const protos = listProtos(protoDir);
  if (protos.length === 0) fail(`no .proto files under ${protoDir}`);
  const hash = inputHash(protos);
  const stored = fs.existsSync(hashFile) ? fs.readFileSync(hashFile, 'utf8').trim() : '';
  const upToDate = !force && stored === hash && fs.existsSync(outJs) && fs.existsSync(outDts);
  if (upToDate) {
    log(`up to date (${protos.length} protos)`);
  } else {
    const t0 = Date.now();
    generate(protos);
    fs.writeFileSync(hashFile, `${hash}\n`);
    log(`generated ${path.relative(root, outJs)} and ${path.relative(root, outDts)} from ${protos.length} protos in ${Date.now() - t0} ms`);
  }
  ensureDistCopy();
}

main();
