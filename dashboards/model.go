package dashboards

import (
	"encoding/json"
	"fmt"
)

// Model is what other tools need from a rendered dashboard: its panels with
// their queries and its template variables. It is read back from the JSON,
// so checks run on exactly what ships.
type Model struct {
	UID       string
	Title     string
	Panels    []Panel
	Variables []Variable
}

// Panel is one non-row panel.
type Panel struct {
	ID          int
	Type        string
	Title       string
	Description string
	Unit        string
	Datasource  string // the data source uid, e.g. ${datasource}
	Targets     []Target
}

// Target is one query of a panel.
type Target struct {
	RefID  string
	Expr   string
	Format string // "table" or empty (time series)
}

// Variable is one template variable.
type Variable struct {
	Name       string
	Type       string // datasource, query
	Query      string // for query variables, e.g. label_values(metric{...}, label)
	IncludeAll bool
	AllValue   string
}

type rawDashboard struct {
	UID        string     `json:"uid"`
	Title      string     `json:"title"`
	Panels     []rawPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			IncludeAll bool            `json:"includeAll"`
			AllValue   string          `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type rawPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID  string `json:"refId"`
		Expr   string `json:"expr"`
		Format string `json:"format"`
	} `json:"targets"`
	Panels []rawPanel `json:"panels"` // a collapsed row's panels
}

// ParseModel reads a dashboard JSON document.
func ParseModel(data []byte) (Model, error) {
	var raw rawDashboard
	if err := json.Unmarshal(data, &raw); err != nil {
		return Model{}, fmt.Errorf("parse dashboard: %w", err)
	}
	if raw.UID == "" || raw.Title == "" {
		return Model{}, fmt.Errorf("parse dashboard: uid and title are required")
	}
	m := Model{UID: raw.UID, Title: raw.Title}
	var walk func([]rawPanel)
	walk = func(ps []rawPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out := Panel{ID: p.ID, Type: p.Type, Title: p.Title, Description: p.Description, Unit: p.FieldConfig.Defaults.Unit}
			if p.Datasource != nil {
				out.Datasource = p.Datasource.UID
			}
			for _, t := range p.Targets {
				out.Targets = append(out.Targets, Target{RefID: t.RefID, Expr: t.Expr, Format: t.Format})
			}
			m.Panels = append(m.Panels, out)
		}
	}
	walk(raw.Panels)
	for _, v := range raw.Templating.List {
		mv := Variable{Name: v.Name, Type: v.Type, IncludeAll: v.IncludeAll, AllValue: v.AllValue}
		if len(v.Query) > 0 {
			var s string
			if err := json.Unmarshal(v.Query, &s); err == nil {
				mv.Query = s
			} else {
				var obj struct {
					Query string `json:"query"`
				}
				if err := json.Unmarshal(v.Query, &obj); err != nil {
					return Model{}, fmt.Errorf("parse dashboard %s: variable %s: query: %w", raw.UID, v.Name, err)
				}
				mv.Query = obj.Query
			}
		}
		m.Variables = append(m.Variables, mv)
	}
	return m, nil
}

// Models parses every dashboard All renders.
func Models() ([]Model, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	out := make([]Model, 0, len(all))
	for _, d := range all {
		m, err := ParseModel(d.JSON)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.File, err)
		}
		out = append(out, m)
	}
	return out, nil
}
