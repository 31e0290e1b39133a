# Deploy queue-pump to Fly.io as a worker (no public service), from this checkout.
# PowerShell twin of scripts/deploy-fly.sh (Windows PowerShell 5.1 or PowerShell 7+).
#
#   $env:SUPABASE_URL = "https://<project>.supabase.co"; $env:AGENT_TOKEN = "..."; $env:ORGANIZATION_ID = "..."
#   ./scripts/deploy-fly.ps1 [-App my-pump] [-Org my-org] [-- extra `flyctl deploy` flags]
#
# SUPABASE_URL, AGENT_TOKEN, ORGANIZATION_ID are required (asked for, hidden, when missing and
# the session is interactive); SUPABASE_ANON_KEY and QUEUE_PUMP_ALERT_WEBHOOK_URL are pushed
# when set. Values go to flyctl on standard input (`secrets import --stage`), never on a
# command line, and are never printed. FLY_APP (or FLY_APP_NAME) / FLY_ORG / FLYCTL /
# FLY_API_TOKEN work as in deploy-fly.sh.
[CmdletBinding()]
param(
    [string]$App = $env:FLY_APP,
    [string]$Org = $env:FLY_ORG,
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$DeployArgs = @()
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Fail([string]$Message) {
    [Console]::Error.WriteLine("deploy-fly: error: $Message")
    exit 1
}
function Say([string]$Message) { Write-Output "deploy-fly: $Message" }

$Root = Split-Path -Parent $PSScriptRoot
$Config = Join-Path $Root 'fly.toml'

# flyctl
$Fly = $null
foreach ($candidate in @($env:FLYCTL, 'flyctl', 'fly')) {
    if ($candidate -and (Get-Command $candidate -ErrorAction SilentlyContinue)) { $Fly = $candidate; break }
}
if (-not $Fly) {
    if ($env:FLYCTL) { Fail "FLYCTL=$($env:FLYCTL) is not an executable" }
    Fail 'flyctl not found on PATH; install it (https://fly.io/docs/flyctl/install/) or set FLYCTL'
}
if (-not (Test-Path -LiteralPath $Config)) { Fail "$Config not found" }

# App name: -App / FLY_APP / FLY_APP_NAME (the runbook's name), else fly.toml's app = "...".
if ($env:FLY_APP -and $env:FLY_APP_NAME -and $env:FLY_APP -ne $env:FLY_APP_NAME) {
    Fail "FLY_APP=$($env:FLY_APP) and FLY_APP_NAME=$($env:FLY_APP_NAME) disagree; set one of them"
}
if (-not $App) { $App = $env:FLY_APP_NAME }
if (-not $App) {
    $line = Select-String -LiteralPath $Config -Pattern '^app\s*=\s*"([^"]*)"' | Select-Object -First 1
    if ($line) { $App = $line.Matches[0].Groups[1].Value }
}
if (-not $App) { Fail 'no app name: pass -App, set FLY_APP (or FLY_APP_NAME), or app = "..." in fly.toml' }

# Secrets
$Required = @('SUPABASE_URL', 'AGENT_TOKEN', 'ORGANIZATION_ID')
$Optional = @('SUPABASE_ANON_KEY', 'QUEUE_PUMP_ALERT_WEBHOOK_URL')
$Values = [ordered]@{}
$Missing = @()
$Interactive = [Environment]::UserInteractive -and -not [Console]::IsInputRedirected
foreach ($name in $Required) {
    $value = [Environment]::GetEnvironmentVariable($name)
    if (-not $value -and $Interactive) {
        $secure = Read-Host -Prompt "$name (input hidden)" -AsSecureString
        $bstr = [Runtime.InteropServices.Marshal]::SecureStringToBSTR($secure)
        try { $value = [Runtime.InteropServices.Marshal]::PtrToStringBSTR($bstr) }
        finally { [Runtime.InteropServices.Marshal]::ZeroFreeBSTR($bstr) }
    }
    if ($value) { $Values[$name] = $value } else { $Missing += $name }
}
if ($Missing.Count -gt 0) {
    Fail "missing environment variable(s): $($Missing -join ' ') (set them; they become Fly secrets, never written to a file)"
}
foreach ($name in $Optional) {
    $value = [Environment]::GetEnvironmentVariable($name)
    if ($value) { $Values[$name] = $value }
}
foreach ($name in $Values.Keys) {
    if ($Values[$name] -match "[`r`n]") { Fail "$name contains a line break" }
}
if (-not $Values['SUPABASE_URL'].StartsWith('https://')) {
    Fail 'SUPABASE_URL must start with https:// (the token would travel in clear)'
}

# An app-scoped deploy token (FLY_API_TOKEN) cannot answer `auth whoami`: only without a
# token is a login required up front.
if (-not $env:FLY_API_TOKEN) {
    & $Fly auth whoami *> $null
    if ($LASTEXITCODE -ne 0) { Fail "not logged in to Fly: run '$Fly auth login' (or set FLY_API_TOKEN)" }
}

# 1. The app: `flyctl status --app` works with every token that can deploy it (a deploy token
# cannot list apps); only "Could not find App" means missing, any other failure stops here.
# (Windows PowerShell 5.1 turns a native command's stderr into errors, which 'Stop' would throw.)
$ErrorActionPreference = 'Continue'
$status = (& $Fly status --app $App 2>&1 | ForEach-Object { "$_" }) -join "`n"
$statusCode = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
if ($statusCode -eq 0) {
    Say "app $App exists"
} elseif ($status -match '(?i)could not (find|resolve) app') {
    Say "creating app $App"
    $createArgs = @('apps', 'create', $App)
    if ($Org) { $createArgs += @('--org', $Org) }
    & $Fly @createArgs *> $null
    if ($LASTEXITCODE -ne 0) {
        Fail "could not create app ${App}: creating needs a personal or org token (a deploy token only deploys an existing app); or the name is taken: pass -App"
    }
} else {
    $last = ($status -split "`n" | Where-Object { $_.Trim() } | Select-Object -Last 1)
    Fail "flyctl status --app $App failed: $last"
}

# 2. Secrets, staged (applied by the deploy below), from stdin.
$lines = foreach ($name in $Values.Keys) { "$name=$($Values[$name])" }
$lines | & $Fly secrets import --stage --app $App *> $null
if ($LASTEXITCODE -ne 0) { Fail "flyctl secrets import failed for app $App" }
$lines = $null
Say "staged secrets: $($Values.Keys -join ' ') (values not shown)"
$Values = $null

# 3. Deploy: one Machine (scale out later with `fly scale count`), built by Fly's builder.
Say "deploying $App"
& $Fly deploy --app $App --config $Config --remote-only '--ha=false' @DeployArgs
if ($LASTEXITCODE -ne 0) { Fail 'flyctl deploy failed (see above)' }

Say 'deployed. Watch it:'
Say "  $Fly logs --app $App"
Say "  $Fly status --app $App     $Fly checks list --app $App"
Say "  more pumps: $Fly scale count 3 --app $App   (the runner claims each job atomically)"
