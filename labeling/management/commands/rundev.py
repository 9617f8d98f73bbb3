import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = ("Run the web server, a Celery worker per queue (default; sampling; gpu for training; chat for the "
            "model's replies in chats) and Celery beat together; Ctrl-C stops them all.")

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", addrport],
            "worker": [python, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--concurrency", "1",
                       "-n", "default@%h", "--loglevel", "INFO"],
            "sampling-worker": [python, "-m", "celery", "-A", "config", "worker", "-Q", "sampling", "--concurrency",
                                "1", "-n", "sampling@%h", "--loglevel", "INFO"],
            "gpu-worker": [python, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "--concurrency", "1",
                           "-n", "gpu@%h", "--loglevel", "INFO"],
            # Threads: each chat's reply streams while the others' do, from one copy of the model.
            "chat-worker": [python, "-m", "celery", "-A", "config", "worker", "-Q", "chat", "--pool", "threads",
                            "--concurrency", "4", "-n", "chat@%h", "--loglevel", "INFO"],
            "beat": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
        }
        processes = {name: subprocess.Popen(command) for name, command in commands.items()}
        self.stdout.write(f"Site on http://{addrport}/ with workers and beat. Ctrl-C stops everything.")

        def stop(*_):
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        else:
            crashed = [name for name, process in processes.items() if process.poll() is not None]
            self.stderr.write(f"Stopping everything because {', '.join(crashed)} exited.")
        finally:
            stop()
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
