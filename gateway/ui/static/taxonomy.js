// taxoforge console: the taxonomy tree's keyboard navigation (a WAI-ARIA tree view with a
// roving tabindex). Hand-written, no build step, nothing fetched from elsewhere.
"use strict";

(function () {
  function groupOf(item) {
    for (var i = 0; i < item.children.length; i++) {
      if (item.children[i].getAttribute("role") === "group") return item.children[i];
    }
    return null;
  }

  function setExpanded(item, open) {
    var group = groupOf(item);
    if (!group) return;
    item.setAttribute("aria-expanded", open ? "true" : "false");
    group.hidden = !open;
  }

  // The items a person can reach now: those not inside a closed node.
  function visibleItems(tree) {
    var out = [];
    tree.querySelectorAll('[role="treeitem"]').forEach(function (item) {
      var hidden = false;
      var up = item.parentElement;
      while (up && up !== tree) {
        if (up.hidden) {
          hidden = true;
          break;
        }
        up = up.parentElement;
      }
      if (!hidden) out.push(item);
    });
    return out;
  }

  function parentItem(item) {
    var up = item.parentElement;
    while (up && up.getAttribute("role") !== "tree") {
      if (up.getAttribute("role") === "treeitem") return up;
      up = up.parentElement;
    }
    return null;
  }

  function focusItem(tree, item) {
    tree.querySelectorAll('[role="treeitem"][tabindex="0"]').forEach(function (other) {
      other.setAttribute("tabindex", "-1");
    });
    item.setAttribute("tabindex", "0");
    item.focus();
  }

  function onKey(tree, event) {
    var item = event.target.closest('[role="treeitem"]');
    if (!item || event.altKey || event.ctrlKey || event.metaKey) return;
    var items = visibleItems(tree);
    var at = items.indexOf(item);
    var expanded = item.getAttribute("aria-expanded");
    var target = null;
    switch (event.key) {
      case "ArrowDown":
        target = items[at + 1] || null;
        break;
      case "ArrowUp":
        target = at > 0 ? items[at - 1] : null;
        break;
      case "Home":
        target = items[0];
        break;
      case "End":
        target = items[items.length - 1];
        break;
      case "ArrowRight":
        if (expanded === "false") setExpanded(item, true);
        else if (expanded === "true") target = items[at + 1] || null;
        break;
      case "ArrowLeft":
        if (expanded === "true") setExpanded(item, false);
        else target = parentItem(item);
        break;
      case "Enter":
      case " ":
        if (expanded !== null) setExpanded(item, expanded === "false");
        break;
      default:
        return;
    }
    event.preventDefault();
    if (target) focusItem(tree, target);
  }

  function setUp(tree) {
    // Open at first: two levels, and every path to a proposal (what a reviewer looks for).
    // Without this script the whole tree stays open, and readable.
    tree.querySelectorAll('[role="treeitem"][aria-expanded]').forEach(function (item) {
      var level = Number(item.getAttribute("aria-level") || "1");
      var proposal = item.querySelector('[data-proposed="true"]') !== null;
      setExpanded(item, level < 2 || proposal);
    });
    tree.addEventListener("keydown", function (event) {
      onKey(tree, event);
    });
    tree.addEventListener("click", function (event) {
      var row = event.target.closest(".node-row");
      if (!row) return;
      var item = row.parentElement;
      if (item.getAttribute("aria-expanded") !== null) {
        setExpanded(item, item.getAttribute("aria-expanded") === "false");
      }
      focusItem(tree, item);
    });
    tree.addEventListener("focusin", function (event) {
      var item = event.target.closest('[role="treeitem"]');
      if (item && item.getAttribute("tabindex") !== "0") focusItem(tree, item);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[role="tree"]').forEach(setUp);
  });
})();
