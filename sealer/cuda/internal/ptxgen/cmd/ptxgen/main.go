// Command ptxgen writes the PTX of vramseal's leaf kernel.
//
//	go run ./sealer/cuda/internal/ptxgen/cmd/ptxgen -o sealer/cuda/sha256_leaves.ptx
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/vramseal/vramseal/sealer/cuda/internal/ptxgen"
)

func main() {
	out := flag.String("o", "", "output file (stdout when empty)")
	flag.Parse()
	ptx, err := ptxgen.LeafPTX()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ptxgen:", err)
		os.Exit(1)
	}
	if *out == "" {
		fmt.Print(ptx)
		return
	}
	if err := os.WriteFile(*out, []byte(ptx), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "ptxgen:", err)
		os.Exit(1)
	}
}
