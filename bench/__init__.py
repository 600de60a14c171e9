"""`python -m bench`: Volley against a transport ceiling and a dlt peer, measured in one run.

Each module holds one idea: `audience` (the Parquet audience), `rei` (the Responsys
request body and login), `simulator` (the vendor simulator and its counters),
`reference` (the transport ceiling), `dlt_peer` (the dlt custom destination),
`volley_runner` (the `volley run` subprocess, its memory and its outcomes),
`throttled` (pacing against a rate-limited vendor, any vendor), `vendors` (each vendor's
spec, simulator options and one `volley run` against its own simulator), `vendor_audiences`
(MedChat, Relay, Sprinklr and Intilery audiences), `warehouse` (peak memory of a DuckDB
extract at two sizes), `profiling` (py-spy),
`machine` (what the numbers were measured on, and how busy it was),
`report` (table, JSON and docs/BENCHMARKS.md).
"""
