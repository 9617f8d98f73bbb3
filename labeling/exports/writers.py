"""Files written row by row, so memory holds one batch whatever the export's size."""

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_BATCH_ROWS = 20_000


class JsonlWriter:
    def __init__(self, path, schema):
        self.file = open(path, "w", encoding="utf-8", buffering=1 << 20)

    def write(self, row):
        self.file.write(json.dumps(row, ensure_ascii=False, default=str))
        self.file.write("\n")

    def close(self):
        self.file.close()


class GzipJsonlWriter(JsonlWriter):
    def __init__(self, path, schema):
        # No name and no time in the header: the same rows give the same bytes, and so the same checksum.
        self.file = _TextOver(open(path, "wb"))


class _TextOver:
    """Gzip-compressed text over a binary file, with a large write buffer."""

    def __init__(self, target):
        self.target = target
        self.raw = gzip.GzipFile(filename="", mode="wb", fileobj=target, compresslevel=6, mtime=0)
        self.parts, self.size = [], 0

    def write(self, text):
        self.parts.append(text)
        self.size += len(text)
        if self.size > 1 << 20:
            self.flush()

    def flush(self):
        self.raw.write("".join(self.parts).encode("utf-8"))
        self.parts, self.size = [], 0

    def close(self):
        self.flush()
        self.raw.close()
        self.target.close()


class ParquetWriter:
    def __init__(self, path, schema):
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = []

    def write(self, row):
        self.rows.append(row)
        if len(self.rows) >= PARQUET_BATCH_ROWS:
            self.flush()

    def flush(self):
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self):
        self.flush()
        self.writer.close()


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value):
    """A text cell that a spreadsheet would run as a formula, with a leading single quote so that it shows as text.

    Only text is changed: numbers (negative ones too), booleans and empty cells are written as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvWriter:
    """CSV is for spreadsheets, so formula-like text is neutralised; JSONL and Parquet keep every text exact."""

    def __init__(self, path, schema):
        self.file = open(path, "w", encoding="utf-8", newline="", buffering=1 << 20)
        self.writer = csv.DictWriter(self.file, fieldnames=schema.names)
        self.writer.writeheader()

    def write(self, row):
        self.writer.writerow({name: neutralised(value) for name, value in row.items()})

    def close(self):
        self.file.close()


WRITERS = {"jsonl": JsonlWriter, "jsonl.gz": GzipJsonlWriter, "parquet": ParquetWriter, "csv": CsvWriter}


def is_flat(schema):
    """CSV only for rows without lists or objects."""
    return not any(pa.types.is_nested(field.type) for field in schema)
