package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/igpt/igpt/internal/serve"
)

var serveAddr = flag.String("addr", "127.0.0.1:8080", "serve: address to listen on")

func init() { igptFlags["addr"] = true }

// serveFlags are igpt serve's flags, as its help shows them.
var serveFlags = []flagDoc{
	{name: "root", usage: "the output root to show (a local folder or gs://bucket/prefix; required)"},
	{name: "addr", usage: "address to listen on; any but a loopback one requires the access token printed with the URL"},
}

func serveCmd(ctx context.Context, _ []string) error {
	if *root == "" {
		return fmt.Errorf("serve: give --root DIR or gs://bucket/prefix, the root igpt run wrote (the config's root:)")
	}
	s, err := serve.New(ctx, serve.Options{Root: *root, Addr: *serveAddr, Log: slog.Default()})
	if err != nil {
		return err
	}
	return s.Listen(ctx, func(url string) { fmt.Printf("igpt serve: open %s\n", url) })
}
