// Command igpt prepares image datasets, trains pixel transformers and
// probes their representations, as a workflow of rerunnable stages.
//
//	igpt run CONFIG         run every stage not yet done (with --until, only STAGE and what it needs), then print a summary
//	igpt stage NAME CONFIG  run one stage; its upstream stages must be done
//	igpt status CONFIG      each stage: done or not, key, records per split, bytes, finish time
//	igpt inspect PATH       a shard (local or gs://): header, record count, first records; a stage folder: its manifest
//	igpt show tokens PATH   draw the first records of a quantize or vqvae-encode folder (or a Tokens shard), each original beside its tokens decoded by the palette or the VQ-VAE
//	igpt sample RUN         from a train stage folder: --n unconditional samples, or --n completions of your own picture (--complete)
//	igpt export-hf RUN      a train folder's final weights as a Hugging Face ImageGPT model (config.json + model.safetensors)
//	igpt import-hf DIR      a Hugging Face ImageGPT folder (e.g. published iGPT weights) as an igpt checkpoint
//	igpt serve              see every run under --root in a browser: live curves, runs side by side, samples at every kept step, complete your own picture
//	igpt stages             list the stages in the order a run takes them
//	igpt help [COMMAND]     this list, or one command's arguments and flags
//
// `igpt help COMMAND` (or `igpt COMMAND --help`) shows a command's arguments
// and every flag with its default. Flags go anywhere on the line; Beam's
// flags (--runner, --project, --region, --staging_location, --worker_binary)
// are accepted too.
//
// This comment is generated from the command table in commands.go:
// go test ./cmd/igpt -run TestPackageDoc -regen rewrites it.
package main
