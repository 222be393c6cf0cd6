#!/usr/bin/env bash
# Set up one role of the plot manager on Debian/Ubuntu, idempotently.
#
#   ./install.sh harvester|plotter|farmer [--cron] [--dashboard] [--config PATH] [--user USER] [--no-apt]
#                [--cron-dir DIR] [--systemd-dir DIR]
#
#   - installs the role's system packages (apt),
#   - makes a virtualenv in .venv with the pinned requirements.txt,
#   - copies config/plot_manager.skel.yaml to the config path if no config is there (never
#     overwrites one) with mode 0600, since it can hold mail/SMS/push secrets,
#   - creates the state directory the config names and validates the config,
#   - with --cron, writes the role's cron entries to /etc/cron.d/plot_manager-ROLE (rewritten
#     whole each time, so running it again never duplicates a line),
#   - with --dashboard, writes the systemd unit plot_manager-dashboard.service (farm_dashboard.py,
#     the read-only web page of the farm, as USER) and enables and (re)starts it where systemd runs.
set -euo pipefail
cd "$(dirname "$0")"
INSTALL_DIR=$(pwd)

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 2; }

role=""; cron=0; dashboard=0; apt=1; user=$(id -un); config=""; cron_dir=/etc/cron.d
systemd_dir=/etc/systemd/system; default_systemd_dir=$systemd_dir
while [ $# -gt 0 ]; do
    case "$1" in
        harvester|plotter|farmer) [ -z "$role" ] || die "only one role at a time"; role=$1 ;;
        --cron) cron=1 ;;
        --dashboard) dashboard=1 ;;
        --systemd-dir) [ $# -ge 2 ] || die "--systemd-dir needs a directory"; systemd_dir=$2; shift ;;
        --no-apt) apt=0 ;;
        --config) [ $# -ge 2 ] || die "--config needs a path"; config=$2; shift ;;
        --user) [ $# -ge 2 ] || die "--user needs a user name"; user=$2; shift ;;
        --cron-dir) [ $# -ge 2 ] || die "--cron-dir needs a directory"; cron_dir=$2; shift ;;
        -h|--help) usage 0 ;;
        *) die "unknown argument '$1' (see ./install.sh --help)" ;;
    esac
    shift
done
[ -n "$role" ] || die "name a role: harvester, plotter or farmer (see ./install.sh --help)"
id "$user" >/dev/null 2>&1 || die "--user: no such user '$user'"
home=$(getent passwd "$user" | cut -d: -f6)
config=${config:-$home/.config/plot_manager/plot_manager.yaml}

# 1. System packages for the role.
packages=(python3 python3-venv python3-pip)
case "$role" in
    harvester) packages+=(smartmontools netcat-openbsd sysstat openssh-server util-linux) ;;
    plotter)   packages+=(netcat-openbsd sysstat openssh-client util-linux) ;;
    farmer)    packages+=(openssh-client) ;;
esac
if [ "$apt" = 1 ]; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root (or pass --no-apt)"
        echo "installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# 2. The virtualenv.
BOOTSTRAP_NO_APT=$((1 - apt)) bash scripts/bootstrap.sh runtime
python=$INSTALL_DIR/.venv/bin/python

# 3. The config: copied once, never overwritten.
if [ -e "$config" ]; then
    echo "config: keeping existing $config"
else
    install -d -m 0700 -o "$user" "$(dirname "$config")"
    install -m 0600 -o "$user" config/plot_manager.skel.yaml "$config"
    echo "config: created $config from the skeleton; edit it, then run: $python $INSTALL_DIR/drive_manager.py --config $config --check-config"
fi

# 4. State directory (from the config) and a validation run; also whether local moves are on.
settings_info=$("$python" - "$config" <<'PY'
import sys
sys.path.insert(0, ".")
from utilities.config import load_settings
from utilities.errors import ConfigError
try:
    settings, _ = load_settings(sys.argv[1])
except ConfigError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
print(settings.state_path)
print("yes" if settings.harvester.local_moves.enabled else "no")
print(f"http://{settings.dashboard.bind}:{settings.dashboard.port}/")
PY
) || die "the config $config is not valid; fix it and run install.sh again"
state_dir=$(sed -n 1p <<<"$settings_info")
local_moves=$(sed -n 2p <<<"$settings_info")
dashboard_url=$(sed -n 3p <<<"$settings_info")
install -d -m 0750 -o "$user" "$state_dir"
echo "state: $state_dir"

# 5. Cron entries for the role.
if [ "$cron" = 1 ]; then
    run="cd $(printf %q "$INSTALL_DIR") && PLOT_MANAGER_CONFIG=$(printf %q "$config") $(printf %q "$python")"
    case "$role" in
        # stdout (what a run did) goes to the log only; warnings and errors on stderr reach cron mail.
        harvester) script=drive_manager.py; lines=(
            "* * * * * $user $run drive_manager.py >/dev/null"
            "01 00 * * * $user $run drive_manager.py -ud >/dev/null"
            "02 00 * * * $user $run drive_manager.py -dr >/dev/null"
            # Plot checks: an hour a night at idle I/O priority, a slice of the farm each night.
            "30 02 * * * $user $run drive_manager.py --check-plots --budget-minutes 60 >/dev/null")
            # A harvester that also plots (harvester.local_moves.enabled): move its own plots on.
            [ "$local_moves" = yes ] && lines+=("*/2 * * * * $user $run move_local_plots.py >/dev/null") ;;
        plotter) script=plot_manager.py; lines=("*/2 * * * * $user $run plot_manager.py >/dev/null") ;;
        farmer) script=coin_monitor.py; lines=("* * * * * $user $run coin_monitor.py >/dev/null") ;;
    esac
    [ -e "$INSTALL_DIR/$script" ] || die "--cron: $script is not part of this version yet; no cron entries written"
    install -d "$cron_dir"
    cron_file="$cron_dir/plot_manager-$role"
    {
        echo "# Written by $INSTALL_DIR/install.sh $role --cron; rerun it to update. Warnings and errors go to cron mail."
        echo "SHELL=/bin/sh"
        printf '%s\n' "${lines[@]}"
    } > "$cron_file.tmp"
    chmod 0644 "$cron_file.tmp"
    mv "$cron_file.tmp" "$cron_file"
    echo "cron: wrote $cron_file"
fi
# 6. The dashboard as a systemd service.
if [ "$dashboard" = 1 ]; then
    unit=plot_manager-dashboard.service
    install -d "$systemd_dir"
    {
        echo "# Written by $INSTALL_DIR/install.sh $role --dashboard; rerun it to update."
        echo "[Unit]"
        echo "Description=Chia plot manager farm dashboard (read-only web page)"
        echo "After=network-online.target"
        echo "Wants=network-online.target"
        echo ""
        echo "[Service]"
        echo "Type=simple"
        echo "User=$user"
        echo "WorkingDirectory=$INSTALL_DIR"
        echo "Environment=\"PLOT_MANAGER_CONFIG=$config\""
        echo "ExecStart=\"$python\" \"$INSTALL_DIR/farm_dashboard.py\""
        echo "Restart=on-failure"
        echo "RestartSec=10"
        echo "NoNewPrivileges=yes"
        echo "PrivateTmp=yes"
        echo "ProtectSystem=full"
        echo ""
        echo "[Install]"
        echo "WantedBy=multi-user.target"
    } > "$systemd_dir/$unit.tmp"
    chmod 0644 "$systemd_dir/$unit.tmp"
    mv "$systemd_dir/$unit.tmp" "$systemd_dir/$unit"
    echo "dashboard: wrote $systemd_dir/$unit ($dashboard_url)"
    if [ "$systemd_dir" = "$default_systemd_dir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload
        systemctl enable --quiet "$unit"
        systemctl restart "$unit"
        echo "dashboard: enabled and started $unit"
    else
        echo "dashboard: systemd is not running here; start it with: systemctl daemon-reload && systemctl enable --now $unit"
    fi
fi
echo "install.sh: $role ready"
