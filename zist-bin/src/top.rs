//! `zistcl top`: a full-screen live view of every program (docs/reference.md §12).
//!
//! The view is a pure function of [`App`] (tested with ratatui's test
//! backend); the loop around it asks zistd `process.list_stats` once a
//! second, reads keys on a thread of its own, and gives the terminal back
//! on every way out: `q`, Ctrl-C, SIGTERM, SIGHUP, a lost connection.

use std::time::Duration;

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use zist_core::{ProcessRow, ProcessState};

/// How often the view asks zistd.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What `top` shows and where the user is in it.
#[derive(Default)]
pub struct App {
    /// Every program, as zistd last said.
    pub rows: Vec<ProcessRow>,
    /// The selected program, by name (kept across refreshes).
    pub selected: Option<String>,
    /// Only programs whose name contains this.
    pub filter: String,
    /// Typing the filter (after `/`).
    pub editing: bool,
    /// An action waiting for y/n: (`stop` or `detach`, program).
    pub confirm: Option<(&'static str, String)>,
    /// The last thing to tell (an action's outcome, an error).
    pub status: String,
    /// Following the selected program's log: its last lines.
    pub log: Option<(String, Vec<String>)>,
}

/// What a key asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    Nothing,
    Quit,
    /// `start`, `stop`, `restart` or `detach` the program.
    Act(&'static str, String),
    /// Show the program's log.
    Follow(String),
}

impl App {
    /// The programs the filter lets through, in zistd's order.
    pub fn shown(&self) -> Vec<&ProcessRow> {
        self.rows
            .iter()
            .filter(|r| r.info.name.contains(self.filter.as_str()))
            .collect()
    }

    fn index(&self) -> Option<usize> {
        let shown = self.shown();
        let at = self
            .selected
            .as_ref()
            .and_then(|name| shown.iter().position(|r| &r.info.name == name));
        at.or((!shown.is_empty()).then_some(0))
    }

    fn select(&mut self, delta: isize) {
        let shown = self.shown();
        if shown.is_empty() {
            return;
        }
        let at = self.index().unwrap_or(0) as isize + delta;
        let at = at.clamp(0, shown.len() as isize - 1) as usize;
        self.selected = Some(shown[at].info.name.clone());
    }

    fn current(&self) -> Option<String> {
        let shown = self.shown();
        self.index().map(|i| shown[i].info.name.clone())
    }

    /// Takes a key; what the loop should do.
    pub fn key(&mut self, key: KeyEvent) -> Ask {
        if key.kind == KeyEventKind::Release {
            return Ask::Nothing;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Ask::Quit;
        }
        if let Some((verb, name)) = self.confirm.take() {
            if key.code == KeyCode::Char('y') {
                return Ask::Act(verb, name);
            }
            self.status = format!("{verb} {name}: not done");
            return Ask::Nothing;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter | KeyCode::Esc => self.editing = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return Ask::Nothing;
        }
        if self.log.is_some() {
            if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                self.log = None;
            }
            return Ask::Nothing;
        }
        match key.code {
            KeyCode::Char('q') => return Ask::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::PageUp => self.select(-10),
            KeyCode::PageDown => self.select(10),
            KeyCode::Home => self.select(isize::MIN / 2),
            KeyCode::End => self.select(isize::MAX / 2),
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Enter => {
                if let Some(name) = self.current() {
                    return Ask::Follow(name);
                }
            }
            KeyCode::Char(c @ ('s' | 'x' | 'r' | 'd')) => {
                let verb = match c {
                    's' => "start",
                    'x' => "stop",
                    'r' => "restart",
                    _ => "detach",
                };
                if let Some(name) = self.current() {
                    if matches!(verb, "stop" | "detach") {
                        self.status = format!("{verb} {name}? y/n");
                        self.confirm = Some((verb, name));
                    } else {
                        return Ask::Act(verb, name);
                    }
                }
            }
            _ => {}
        }
        Ask::Nothing
    }
}

fn state_style(state: ProcessState) -> Style {
    let color = match state {
        ProcessState::Running => Color::Green,
        ProcessState::Starting | ProcessState::Waiting | ProcessState::Stopping => Color::Yellow,
        ProcessState::Backoff | ProcessState::Fatal => Color::Red,
        ProcessState::Exited | ProcessState::Stopped | ProcessState::Detached => Color::Gray,
    };
    Style::default().fg(color)
}

fn uptime(secs: f64) -> String {
    let s = secs as u64;
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, m, s) => format!("{m}:{s:02}"),
        (0, h, m, s) => format!("{h}:{m:02}:{s:02}"),
        (d, h, _, _) => format!("{d}d{h:02}h"),
    }
}

fn memory(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b => format!("{}K", b / 1024),
    }
}

/// Draws the view.
pub fn draw(frame: &mut Frame, app: &App) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let shown = app.shown();
    let running = app
        .rows
        .iter()
        .filter(|r| r.info.state == ProcessState::Running)
        .count();
    let filter = if app.filter.is_empty() && !app.editing {
        String::new()
    } else {
        format!(
            "  filter: {}{}",
            app.filter,
            if app.editing { "_" } else { "" }
        )
    };
    frame.render_widget(
        Paragraph::new(format!(
            "zist top: {} programs, {running} running{filter}",
            app.rows.len()
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    if let Some((name, lines)) = &app.log {
        let height = usize::from(body.height.saturating_sub(1));
        let tail = &lines[lines.len().saturating_sub(height)..];
        let mut text = vec![Line::styled(
            format!("{name} stdout (Esc: back)"),
            Style::default().add_modifier(Modifier::REVERSED),
        )];
        text.extend(tail.iter().map(|l| Line::raw(l.as_str())));
        frame.render_widget(Paragraph::new(text), body);
    } else {
        let rows = shown.iter().map(|r| {
            let info = &r.info;
            let blank = || "".to_owned();
            let live = info.is_alive();
            Row::new(vec![
                info.name.clone(),
                info.state.as_str().to_owned(),
                info.pid.map_or_else(blank, |p| p.to_string()),
                r.stats
                    .filter(|_| live)
                    .map_or_else(blank, |s| format!("{:.1}", s.cpu_percent)),
                r.stats
                    .filter(|_| live)
                    .map_or_else(blank, |s| memory(s.memory_bytes)),
                info.restarts.to_string(),
                if live {
                    uptime(info.uptime_secs)
                } else {
                    blank()
                },
            ])
            .style(state_style(info.state))
        });
        let table = Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(4),
                Constraint::Length(9),
            ],
        )
        .header(
            Row::new(["NAME", "STATE", "PID", "CPU%", "MEM", "RST", "UPTIME"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol(">");
        let mut state = TableState::default().with_selected(app.index());
        frame.render_stateful_widget(table, body, &mut state);
    }
    let keys = "↑↓ select  / filter  s start  x stop  r restart  d detach  Enter log  q quit";
    let foot_text = if app.status.is_empty() {
        keys.to_owned()
    } else {
        app.status.clone()
    };
    frame.render_widget(
        Paragraph::new(foot_text).style(Style::default().add_modifier(Modifier::DIM)),
        foot,
    );
}

/// Reads keys on a thread of its own (crossterm's read blocks) into `keys`.
pub fn read_keys(keys: tokio::sync::mpsc::UnboundedSender<KeyEvent>) {
    std::thread::spawn(move || {
        loop {
            match event::read() {
                Ok(Event::Key(key)) => {
                    if keys.send(key).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use zist_core::{ProcessInfo, ProcessStats};

    fn row(name: &str, state: ProcessState, pid: Option<i32>) -> ProcessRow {
        let info: ProcessInfo = serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "pid": pid, "path": "/bin/sleep", "args": [],
            "restarts": 2, "started_at": null, "uptime_secs": 75.0, "exit_code": null,
            "exit_signal": null, "exited_at": null, "web": true, "error": null, "message": null,
            "log": {"stdout": {"written": 0, "lost": 0}, "stderr": {"written": 0, "lost": 0}}
        }))
        .unwrap();
        ProcessRow {
            info,
            stats: Some(ProcessStats {
                cpu_percent: 12.5,
                memory_bytes: 3 << 20,
                memory_percent: 0.1,
            }),
        }
    }

    fn screen(app: &App) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn app() -> App {
        App {
            rows: vec![
                row("web", ProcessState::Running, Some(4242)),
                row("worker", ProcessState::Running, Some(4243)),
                row("db", ProcessState::Fatal, None),
            ],
            ..App::default()
        }
    }

    #[test]
    fn every_program_shows_its_columns_in_80_columns() {
        let lines = screen(&app());
        assert!(
            lines[0].starts_with("zist top: 3 programs, 2 running"),
            "{lines:#?}"
        );
        let header = &lines[1];
        for column in ["NAME", "STATE", "PID", "CPU%", "MEM", "RST", "UPTIME"] {
            assert!(header.contains(column), "{header}");
        }
        let web = lines.iter().find(|l| l.contains("web ")).unwrap();
        for cell in ["running", "4242", "12.5", "3.0M", "2", "1:15"] {
            assert!(web.contains(cell), "{cell} not in {web:?}");
        }
        // A program with no process: blanks, not zeros.
        let db = lines.iter().find(|l| l.contains("db")).unwrap();
        assert!(
            db.contains("fatal") && !db.contains("12.5") && !db.contains("1:15"),
            "{db:?}"
        );
        assert!(lines[23].contains("q quit"), "{:?}", lines[23]);
    }

    #[test]
    fn arrows_select_and_the_filter_narrows() {
        let mut app = app();
        assert!(screen(&app)[2].starts_with(">web"), "{:?}", screen(&app)[2]);
        app.key(key(KeyCode::Down));
        let lines = screen(&app);
        assert!(lines[3].starts_with(">worker"), "{lines:#?}");
        assert_eq!(app.key(key(KeyCode::Enter)), Ask::Follow("worker".into()));
        app.key(key(KeyCode::Char('/')));
        for c in "db".chars() {
            app.key(key(KeyCode::Char(c)));
        }
        app.key(key(KeyCode::Enter));
        let lines = screen(&app);
        assert!(lines[0].contains("filter: db"), "{:?}", lines[0]);
        assert!(lines[2].starts_with(">db"), "{lines:#?}");
        assert!(!lines.iter().any(|l| l.contains("web")), "{lines:#?}");
        assert_eq!(
            app.key(key(KeyCode::Char('s'))),
            Ask::Act("start", "db".into())
        );
    }

    #[test]
    fn stop_and_detach_ask_first() {
        let mut app = app();
        assert_eq!(app.key(key(KeyCode::Char('x'))), Ask::Nothing);
        assert!(screen(&app)[23].contains("stop web? y/n"));
        assert_eq!(app.key(key(KeyCode::Char('n'))), Ask::Nothing);
        assert_eq!(app.key(key(KeyCode::Char('d'))), Ask::Nothing);
        assert_eq!(
            app.key(key(KeyCode::Char('y'))),
            Ask::Act("detach", "web".into())
        );
        assert_eq!(
            app.key(key(KeyCode::Char('r'))),
            Ask::Act("restart", "web".into())
        );
        assert_eq!(app.key(key(KeyCode::Char('q'))), Ask::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.key(ctrl_c), Ask::Quit);
    }

    #[test]
    fn the_log_view_shows_the_last_lines() {
        let mut app = app();
        app.log = Some((
            "web".into(),
            (1..=100).map(|i| format!("line {i}")).collect(),
        ));
        let lines = screen(&app);
        assert!(lines[1].starts_with("web stdout"), "{lines:#?}");
        assert_eq!(lines[22], "line 100");
        app.key(key(KeyCode::Esc));
        assert!(app.log.is_none());
    }
}
