// read.mjs FILE [COLUMN] — reads a Parquet file with hyparquet, an engine
// apart from the parquet-go that wrote it, and prints as JSON:
//
//   rows       the rows it read (and footerRows, what the footer says)
//   columns    each column's name, physical type, logical type and
//              repetition, e.g. {"name":"ts","type":"INT64",
//              "logical":"TIMESTAMP(MICROS,utc)","repetition":"REQUIRED"}
//   codecs     the compression codecs of the column chunks
//   rowGroups  per row group: rows and the symbol column's min and max
//   symbols    per symbol: count, sum of COLUMN (default size), nulls of
//              bid, and the first and last ts (or bucket) as ISO strings
//
// The archive's Go tests run it (internal/archive); `make parquet-reader`
// installs its packages.
import { asyncBufferFromFile, parquetMetadataAsync, parquetRead } from 'hyparquet'
import { compressors } from 'hyparquet-compressors'

const [file, sumColumn = 'size'] = process.argv.slice(2)
if (!file) {
  console.error('usage: node read.mjs FILE [COLUMN]')
  process.exit(2)
}

const buf = await asyncBufferFromFile(file)
const meta = await parquetMetadataAsync(buf)

// The leaves of the schema (the archive's files are flat).
const columns = meta.schema.slice(1).map(el => {
  let logical = ''
  const lt = el.logical_type
  if (lt?.type === 'TIMESTAMP') logical = `TIMESTAMP(${lt.unit},${lt.isAdjustedToUTC ? 'utc' : 'local'})`
  else if (lt?.type) logical = lt.type
  else if (el.converted_type) logical = el.converted_type
  return { name: el.name, type: el.type, logical, repetition: el.repetition_type }
})

const codecs = [...new Set(meta.row_groups.flatMap(rg => rg.columns.map(c => c.meta_data.codec)))].sort()
const symbolIndex = columns.findIndex(c => c.name === 'symbol')
const rowGroups = meta.row_groups.map(rg => {
  const stats = rg.columns[symbolIndex]?.meta_data.statistics
  return { rows: Number(rg.num_rows), symbolMin: stats?.min_value ?? null, symbolMax: stats?.max_value ?? null }
})

const timeColumn = columns.some(c => c.name === 'ts') ? 'ts' : 'bucket'
const wanted = ['symbol', sumColumn, timeColumn, ...(columns.some(c => c.name === 'bid') ? ['bid'] : [])]
const symbols = {}
let rows = 0
await parquetRead({
  file: buf,
  metadata: meta,
  compressors,
  columns: wanted,
  rowFormat: 'object',
  onComplete(data) {
    for (const r of data) {
      rows++
      const s = (symbols[r.symbol] ??= { count: 0, sum: 0n, bidNulls: 0, first: null, last: null })
      s.count++
      s.sum += BigInt(r[sumColumn])
      if ('bid' in r && r.bid === null) s.bidNulls++
      const t = r[timeColumn].toISOString()
      if (s.first === null || t < s.first) s.first = t
      if (s.last === null || t > s.last) s.last = t
    }
  },
})
for (const s of Object.values(symbols)) {
  // JSON has no BigInt: a sum past 2^53 is printed as a string.
  s.sum = s.sum <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s.sum) : s.sum.toString()
}

console.log(JSON.stringify({ rows, footerRows: Number(meta.num_rows), columns, codecs, rowGroups, symbols }))
