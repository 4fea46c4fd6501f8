# bench: throughput of the run path. The `generator` input emits 200000
# synthetic inserts spread over three streams as fast as it can; the `files`
# output appends them to bench-out/ and fsyncs before every checkpoint.
# dstream itself is not in the data path (input and output share an OS pipe).
#
#   dstream init, then time dstream run (rm -r bench-out and the state to repeat)

task "bench" {
  type = "providers"
  input {
    provider = "generator"
    config {
      count  = 200000
      tables = ["Persons", "Orders", "Customers"]
    }
  }
  output {
    provider = "files"
    config {
      directory = "bench-out"
      fsync     = true
    }
  }
}
