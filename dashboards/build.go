package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Template variable names, as used in queries ($name).
const (
	VarDatasource = "datasource"
	VarJob        = "job"
	VarInstance   = "instance"
	VarGPU        = "gpu"
	VarShard      = "shard_id"
)

// Label selectors built from the template variables.
const (
	selNode  = `job=~"$job", instance=~"$instance"`
	selGPU   = selNode + `, gpu=~"$gpu"`
	selShard = selGPU + `, shard_id=~"$shard_id"`
)

// Dashboard is one rendered dashboard.
type Dashboard struct {
	// File is the JSON file name under dashboards/json.
	File string
	// UID is the dashboard's stable Grafana UID.
	UID string
	// JSON is the rendered dashboard, indented, with a final newline.
	JSON []byte
}

// All renders every dashboard, in a fixed order.
func All() ([]Dashboard, error) {
	defs := []struct {
		file string
		b    *dashboard.DashboardBuilder
		uid  string
	}{
		{"vramseal-fleet-overview.json", fleetOverview(), uidFleet},
		{"vramseal-node-gpu-detail.json", nodeDetail(), uidNode},
		{"vramseal-audit-pipeline.json", auditPipeline(), uidAudit},
	}
	out := make([]Dashboard, 0, len(defs))
	for _, d := range defs {
		built, err := d.b.Build()
		if err != nil {
			return nil, fmt.Errorf("build dashboard %s: %w", d.file, err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(built); err != nil {
			return nil, fmt.Errorf("encode dashboard %s: %w", d.file, err)
		}
		out = append(out, Dashboard{File: d.file, UID: d.uid, JSON: buf.Bytes()})
	}
	return out, nil
}

const (
	uidFleet = "vramseal-fleet"
	uidNode  = "vramseal-node"
	uidAudit = "vramseal-audit"
)

func newDashboard(uid, title, description string, withShard bool) *dashboard.DashboardBuilder {
	b := dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"vramseal"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Link(dashboard.NewDashboardLinkBuilder("vramseal").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{"vramseal"}).
			AsDropdown(true).
			IncludeVars(true).
			KeepTime(true)).
		WithVariable(dashboard.NewDatasourceVariableBuilder(VarDatasource).
			Label("Data source").
			Type("prometheus")).
		WithVariable(queryVar(VarJob, "Job", "label_values(vramseal_build_info, job)", false)).
		WithVariable(queryVar(VarInstance, "Instance (node)", `label_values(vramseal_agent_info{job=~"$job"}, instance)`, true)).
		WithVariable(queryVar(VarGPU, "GPU", `label_values(vramseal_gpu_info{job=~"$job", instance=~"$instance"}, gpu)`, true))
	if withShard {
		b = b.WithVariable(queryVar(VarShard, "Shard", `label_values(vramseal_shard_info{job=~"$job", instance=~"$instance", gpu=~"$gpu"}, shard_id)`, true))
	}
	return b
}

func queryVar(name, label, query string, all bool) *dashboard.QueryVariableBuilder {
	v := dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Query(dashboard.StringOrMap{String: &query}).
		Definition(query).
		Datasource(datasource()).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortNaturalAsc)
	if all {
		v = v.Multi(true).IncludeAll(true).AllValue(".*")
	}
	return v
}

func datasource() common.DataSourceRef {
	typ, uid := "prometheus", "${"+VarDatasource+"}"
	return common.DataSourceRef{Type: &typ, Uid: &uid}
}

// kind is a panel's visualisation.
type kind int

const (
	timeSeries kind = iota
	statPanel
	tablePanel
)

// query is one PromQL target of a panel.
type query struct {
	expr   string
	legend string
}

// panel describes one panel; build turns it into an SDK builder.
type panel struct {
	kind        kind
	title       string
	description string
	unit        string
	width       uint32
	height      uint32
	queries     []query
	// redAt, when set, colours values at or above it red (stat and table).
	redAt *float64
	// redBelow, when set, colours values below it red (stat and table).
	redBelow *float64
}

func (p panel) build(id uint32) cog.Builder[dashboard.Panel] {
	w, h := p.width, p.height
	if w == 0 {
		w = 12
	}
	if h == 0 {
		h = 8
	}
	targets := make([]cog.Builder[variants.Dataquery], 0, len(p.queries))
	for i, q := range p.queries {
		t := prometheus.NewDataqueryBuilder().
			Datasource(datasource()).
			RefId(string(rune('A' + i))).
			Expr(q.expr)
		if q.legend != "" {
			t = t.LegendFormat(q.legend)
		}
		switch p.kind {
		case statPanel:
			t = t.Instant()
		case tablePanel:
			t = t.Instant().Format(prometheus.PromQueryFormatTable)
		}
		targets = append(targets, t)
	}
	switch p.kind {
	case statPanel:
		b := stat.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(w).Height(h).Targets(targets).
			GraphMode(common.BigValueGraphModeNone).ColorMode(common.BigValueColorModeBackground)
		if th := p.thresholds(); th != nil {
			b = b.Thresholds(th)
		}
		return b
	case tablePanel:
		b := table.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(w).Height(h).Targets(targets).
			WithTransformation(dashboard.DataTransformerConfig{
				Id:      "organize",
				Options: map[string]any{"excludeByName": map[string]bool{"Time": true, "__name__": true}},
			})
		if th := p.thresholds(); th != nil {
			b = b.Thresholds(th)
		}
		return b
	default:
		return timeseries.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(w).Height(h).Targets(targets).
			Legend(common.NewVizLegendOptionsBuilder().
				DisplayMode(common.LegendDisplayModeTable).
				Placement(common.LegendPlacementBottom).
				ShowLegend(true).
				Calcs([]string{"lastNotNull", "max"}))
	}
}

func (p panel) thresholds() *dashboard.ThresholdsConfigBuilder {
	switch {
	case p.redAt != nil:
		return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).
			Steps([]dashboard.Threshold{{Color: "green"}, {Value: p.redAt, Color: "red"}})
	case p.redBelow != nil:
		return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).
			Steps([]dashboard.Threshold{{Color: "red"}, {Value: p.redBelow, Color: "green"}})
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// layout adds rows and panels to a dashboard, numbering them.
type layout struct {
	b      *dashboard.DashboardBuilder
	nextID uint32
}

// row adds an expanded row followed by its panels (Grafana keeps the panels
// of an expanded row beside it, not inside it).
func (l *layout) row(title string, panels ...panel) {
	l.nextID++
	l.b = l.b.WithRow(dashboard.NewRowBuilder(title).Id(l.nextID).Collapsed(false))
	for _, p := range panels {
		l.nextID++
		l.b = l.b.WithPanel(p.build(l.nextID))
	}
}
