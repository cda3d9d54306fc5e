package sealer

import (
	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/internal/logfield"
)

// ProgressThreshold is the shard size from which LogProgress logs lines.
const ProgressThreshold = 64 << 20

// LogProgress returns a SealRequest.Progress callback that logs a line at
// each quarter of a seal of at least ProgressThreshold bytes, so operators
// see large seals advance.
func LogProgress(log logrus.FieldLogger, id string) func(done, total uint64) {
	last := uint64(0)
	return func(done, total uint64) {
		if total < ProgressThreshold || total == 0 {
			return
		}
		step := done * 4 / total // 0..4
		if step <= last {
			return
		}
		last = step
		log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.Done: done, logfield.Bytes: total, logfield.Percent: step * 25}).
			Info("sealing shard")
	}
}
