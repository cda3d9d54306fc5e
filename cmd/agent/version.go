package main

import (
	"context"
	"fmt"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
)

func versionCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("version", "Print the version, revision and Go version.")
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		fmt.Fprintln(c.stdout, version.Print("vramseal-agent"))
		return exitOK
	}
}
