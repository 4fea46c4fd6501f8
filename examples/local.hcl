# local-demo: dstream end to end with no database and no cloud.
#
# The `jsonl` input replays data/changes.jsonl, a captured SQL Server CDC
# stream of dbo.Persons, dbo.Orders and dbo.Customers; the `files` output
# appends each stream to its own file <Table>_cdc_events.jsonl in the
# directory $DSTREAM_OUT (default: out), fsyncing before it acknowledges a
# checkpoint. Relative paths are relative to this file's directory.
#
#   dstream plan   # shows the three output files it would create
#   dstream init   # creates them and records them in state
#   dstream run    # streams the 60 changes; a rerun resumes after its checkpoints

task "local-demo" {
  type = "providers"
  input {
    provider = "jsonl"
    config {
      path = "data/changes.jsonl"
    }
  }
  output {
    provider = "files"
    config {
      directory = "{{ env \"DSTREAM_OUT\" | default \"out\" }}"
    }
  }
}
