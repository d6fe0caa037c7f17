"""Commands: `clearlake stack install|up|down|status|logs`."""

from __future__ import annotations

from typing import Annotated

import typer

from clearlake.cli.app import app, console, fail
from clearlake.errors import StackError

stack_app = typer.Typer(
    help="Install, start, stop and inspect the local stack.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")



@stack_app.command()
def install() -> None:
    """Build lakeFS and lakectl from their Go module (cached; free the second time), and
    check the S3 server's binary."""
    from clearlake.stack.install import install_lakefs, verify_seaweedfs

    try:
        install_lakefs(report=console.print)
        verify_seaweedfs(report=console.print)
    except StackError as error:
        raise fail(error) from error


@stack_app.command()
def up(
    lakefs_port: Annotated[int | None, typer.Option(help="lakeFS port (default 8000).")] = None,
    prefect_port: Annotated[int | None, typer.Option(help="Prefect port (default 4200).")] = None,
    bridge_port: Annotated[int | None, typer.Option(help="Bridge port (default 8765).")] = None,
    dask_port: Annotated[int | None, typer.Option(help="Dask scheduler (default 8786).")] = None,
    s3_port: Annotated[int | None, typer.Option(
        help="S3 server (default 8333; it also takes the next 8 ports and that + 10008).")] = None,
    postgres_port: Annotated[int | None, typer.Option(
        help="PostgreSQL, with --database postgres (default 5433).")] = None,
    blockstore: Annotated[str | None, typer.Option(
        help="Where lakeFS keeps the bytes of a new state directory: 's3' (the stack's S3 "
             "server, default) or 'local' (lakeFS's local blockstore). Kept once chosen.")] = None,
    database: Annotated[str | None, typer.Option(
        help="lakeFS's and Prefect's database for a new state directory: 'sqlite' (default; "
             "lakeFS's local KV) or 'postgres'. Kept once chosen.")] = None,
) -> None:
    """Start the S3 server, lakeFS, Prefect (server, worker, deployments), Dask and the bridge.
    Harmless twice."""
    from clearlake.config import StackSecrets
    from clearlake.stack.install import install_lakefs, lakectl_binary
    from clearlake.stack.services import Stack

    chosen = {"lakefs": lakefs_port, "prefect": prefect_port, "bridge": bridge_port,
              "dask": dask_port, "s3": s3_port, "postgres": postgres_port}
    try:
        stack = Stack(ports={name: port for name, port in chosen.items() if port},
                      blockstore=blockstore, database=database)
        install_lakefs(report=console.print)
        stack.up(report=console.print)
    except StackError as error:
        raise fail(error) from error
    console.print(
        f"\n[bold]lakeFS[/bold]    {stack.lakefs_url}  (web UI; access key id "
        f"{StackSecrets.load(stack.home).lakefs_access_key_id}, secret key in "
        f"{stack.home / 'secrets.json'})\n"
        + (f"[bold]S3[/bold]        {stack.s3_endpoint}  (SeaweedFS; lakeFS's blockstore, bucket "
           f"clearlake; keys in the same file)\n" if stack.profile.blockstore == "s3" else "")
        + f"[bold]Prefect[/bold]   {stack.prefect_api_url.removesuffix('/api')}\n"
        f"[bold]Dask[/bold]      {stack.dask_address}  (dashboard {stack.dask_dashboard_url})\n"
        f"[bold]bridge[/bold]    {stack.bridge_url}/lakefs/events\n"
        f"lakectl:  {lakectl_binary()}  (point it at the stack: eval \"$(clearlake env)\")\n"
        f"Stop with `clearlake stack down` (data is kept)."
    )


@stack_app.command()
def down() -> None:
    """Stop the processes `up` started; keep their data."""
    from clearlake.stack.services import Stack

    Stack().down(report=console.print)


@stack_app.command()
def status() -> None:
    """Report whether each service runs and is healthy (exit 1 if any is not)."""
    from rich.table import Table

    from clearlake.stack.services import Stack

    table = Table("service", "url", "pid", "state")
    all_healthy = True
    for s in Stack().status():
        state = (
            "[green]healthy[/green]"
            if s.healthy
            else ("[yellow]unhealthy[/yellow]" if s.running else "[red]stopped[/red]")
        )
        all_healthy &= s.healthy
        table.add_row(s.name, s.url, str(s.pid or "-"), state)
    console.print(table)
    if not all_healthy:
        raise typer.Exit(code=1)


@stack_app.command()
def logs(
    service: Annotated[str, typer.Argument(
        help="s3, postgres, lakefs, prefect, dask-scheduler, bridge, flow-forkserver, "
             "dask-workers or prefect-worker.")],
    lines: Annotated[int, typer.Option("-n", help="How many of the last lines.")] = 50,
) -> None:
    """Print the last lines of a service's log."""
    from clearlake.stack.services import Stack

    path = Stack().log_path(service)
    if not path.exists():
        raise fail(FileNotFoundError(f"no log for {service!r} at {path}"))
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        console.print(line, markup=False, highlight=False)


@app.command()
def env() -> None:
    """Print exports that point lakectl and Prefect at the stack: eval "$(clearlake env)"."""
    from clearlake.config import lakefs_settings, prefect_api_url
    from clearlake.stack.install import install_dir

    settings = lakefs_settings()
    print(f"export PATH={install_dir() / 'bin'}:$PATH")
    print(f"export LAKECTL_SERVER_ENDPOINT_URL={settings.endpoint}")
    print(f"export LAKECTL_CREDENTIALS_ACCESS_KEY_ID={settings.access_key_id}")
    print(
        f"export LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY="
        f"{settings.secret_access_key.get_secret_value()}"
    )
    print(f"export PREFECT_API_URL={prefect_api_url()}")
