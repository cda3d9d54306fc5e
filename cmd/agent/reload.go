package main

import (
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/internal/config"
)

// reload re-reads the configuration on SIGHUP and applies its shard list:
// new shards are sealed, removed ones released, changed ones re-sealed,
// unchanged ones left alone. Other changes need a restart and are logged.
// A configuration that does not load is logged and ignored.
func (a *agent) reload(file string) {
	log := a.log.WithFields(logrus.Fields{logFieldSignal: "SIGHUP", logFieldConfigFile: file})
	cfg, err := config.Load(file)
	if err != nil {
		log.WithError(err).Error("reload refused: the configuration does not load; keeping the running one")
		return
	}
	if same, keys := a.cfg.SameExceptShards(cfg); !same {
		log.WithField(logFieldKeys, keys).Warn("reload applies the shard list only; restart the agent to apply changes to these keys")
	}
	added, removed, changed := a.declared.Set(cfg.DeclaredShards())
	log.WithFields(logrus.Fields{logFieldAdded: added, logFieldRemoved: removed, logFieldChanged: changed}).
		Info("configuration reloaded")
}
