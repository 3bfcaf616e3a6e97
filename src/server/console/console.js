// The console: the job list, refreshed every second from the REST API.
async function refresh() {
  const jobs = await (await fetch('/api/v1/jobs')).json();
  document.getElementById('jobs').innerHTML = jobs
    .map((j) => `<tr><td>${j.name}</td><td>${j.status}</td><td>${j.records_in}</td></tr>`)
    .join('');
}
setInterval(refresh, 1000);
refresh();
