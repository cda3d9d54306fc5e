package main

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/logfield"
)

// What asked for a reload (the trigger log field).
const (
	reloadSIGHUP      = "SIGHUP"
	reloadFileChanged = "file_changed"
)

// reload re-reads the configuration (on SIGHUP, or when the watched file
// changed) and applies its shard list: new shards are sealed, removed ones
// released, changed ones re-sealed, unchanged ones left alone. Changes to
// other keys need a restart: they are logged and
// vramseal_config_restart_required says so. A configuration that does not
// load is logged and ignored (the running one stays), and
// vramseal_config_last_reload_successful drops to 0 until a reload succeeds.
func (a *agent) reload(file, trigger string) {
	log := a.log.WithFields(logrus.Fields{logfield.Trigger: trigger, logfield.ConfigFile: file})
	cfg, err := config.Load(file)
	if err != nil {
		a.reloads.Failed()
		log.WithError(err).Error("reload refused: the configuration does not load; keeping the running one")
		return
	}
	same, keys := a.cfg.SameExceptShards(cfg)
	if !same {
		log.WithField(logfield.Keys, keys).Warn("reload applies the shard list only; restart the agent to apply changes to these keys")
	}
	added, removed, changed := a.declared.Set(cfg.DeclaredShards())
	a.reloads.Succeeded(time.Now(), !same)
	log.WithFields(logrus.Fields{logfield.Added: added, logfield.Removed: removed, logfield.Changed: changed}).
		Info("configuration reloaded")
}
